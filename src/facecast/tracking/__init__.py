"""Tracking stage: MediaPipe face mesh, head pose, eye/mouth openness, One Euro smoothing."""

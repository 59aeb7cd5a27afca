"""Analyses of a video on the CPU: the camera's movement (`camera.py`, `facecast analyze`)."""

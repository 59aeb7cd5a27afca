"""Reading and writing video files (PyAV)."""

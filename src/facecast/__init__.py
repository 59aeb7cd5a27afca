"""facecast: real-time face animation and face swap for livestreamers."""

__version__ = "0.1.0"

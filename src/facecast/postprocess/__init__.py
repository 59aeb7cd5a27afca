"""Post steps for any job's output: frame interpolation to a target fps (`interpolate.py`), a
quality report (`quality.py`), and the hook that runs them after a job kind (`hook.py`)."""

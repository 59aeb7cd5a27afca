"""Capture stage: where frames come from. One file per kind of source; `stage.py` runs them."""

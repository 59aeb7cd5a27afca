"""Effect stage: what is done to the frame. One file per effect; `stage.py` holds the registry."""

"""Output stage: where frames go. One file per kind of output; `stage.py` fans frames out to them."""

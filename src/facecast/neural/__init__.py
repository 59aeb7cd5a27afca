"""Neural model pipelines (LivePortrait, inswapper): pure prepare/postprocess around engine calls."""

"""Job kinds: one file per kind of offline video job."""

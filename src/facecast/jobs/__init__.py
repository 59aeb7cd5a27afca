"""Offline video jobs: a durable SQLite queue and the batch thread that runs them."""

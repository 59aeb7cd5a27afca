"""Threads, bounded queues, timing and shutdown: everything the stages do not have to know about."""

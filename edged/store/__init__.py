"""Persistent state: SQLite through sqlite-utils (schema in `migrations`) and content-addressed blobs."""

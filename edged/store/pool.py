"""SQLite connections reused across API requests.

Opening a connection costs a file open, the WAL check and two PRAGMAs, and the request dependency
that opened one per request ran in the threadpool on the way in and out: two thread hand-offs per
request, which under 50 concurrent clients cost more than the queries. The pool is taken from and
given back to on the event loop; a connection serves one request at a time, on whichever thread
runs that request (they are opened with check_same_thread=False).
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlite_utils

from edged.store.db import open_db

KEEP_IDLE = 16  # connections kept open between bursts; more are opened under load and closed after


class ConnectionPool:
    def __init__(self, path: Path, keep_idle: int = KEEP_IDLE) -> None:
        self.path, self.keep_idle = path, keep_idle
        self._idle: list[sqlite_utils.Database] = []
        self._lock = threading.Lock()

    def acquire(self) -> sqlite_utils.Database:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return open_db(self.path)

    def release(self, db: sqlite_utils.Database) -> None:
        if db.conn.in_transaction:  # a request that failed half-way: its writes are not kept
            db.conn.rollback()
        with self._lock:
            if len(self._idle) < self.keep_idle:
                self._idle.append(db)
                return
        db.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

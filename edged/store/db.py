"""Opening edged's SQLite database and bringing its schema up to date.

One connection per user (a request, the worker process, the sampler): WAL lets readers and one
writer work at once, and the busy timeout makes a second writer wait instead of failing. A transaction
(`db.atomic()`) takes the write lock when it begins: a deferred one that read first and then wrote after
another connection's commit would fail at once with "database is locked", the busy timeout unused.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Union

import sqlite_utils

from edged.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0


class Database(sqlite_utils.Database):
    @contextlib.contextmanager
    def atomic(self) -> Iterator["Database"]:
        """A transaction that holds the write lock from its start (nested: a savepoint, as sqlite-utils does)."""
        if self.conn.in_transaction:
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")  # waits up to the busy timeout for another writer
        try:
            yield self
        except BaseException:
            self.conn.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.rollback()
            raise


def open_db(path: Union[str, Path]) -> sqlite_utils.Database:
    """A connection with WAL, foreign keys and a busy timeout; usable from any one thread at a time."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: FastAPI may resolve a dependency and run the route on different threads.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    db = Database(conn)
    db.enable_wal()
    db.execute("PRAGMA foreign_keys = ON")
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return db


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> int:
    """Apply the migrations this database has not seen yet, each in its own transaction.

    Migration i (1-based position in MIGRATIONS) leaves PRAGMA user_version = i. Returns the version.
    """
    current = schema_version(db)
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this edged knows ({len(MIGRATIONS)}); "
            "upgrade edged or point EDGED_DATA_DIR elsewhere"
        )
    for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
        with db.atomic():
            migration(db)
            db.execute(f"PRAGMA user_version = {version}")
        log.info("database migrated to version %d (%s)", version, migration.__name__)
    return len(MIGRATIONS)


def utc_now(seconds_ago: float = 0.0) -> str:
    """Timestamps stored in TEXT columns: ISO 8601, UTC, second precision (they sort as text)."""
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")

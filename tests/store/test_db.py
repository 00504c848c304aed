"""The SQLite store: WAL, foreign keys, idempotent numbered migrations, each in a transaction."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from edged.store import migrations
from edged.store.db import migrate, open_db, schema_version


def test_open_db_uses_wal_foreign_keys_and_busy_timeout(tmp_path):
    db = open_db(tmp_path / "sub" / "e.db")
    assert db.journal_mode == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_migrations_are_idempotent_and_versioned(tmp_path):
    db = open_db(tmp_path / "e.db")
    assert schema_version(db) == 0
    assert migrate(db) == len(migrations.MIGRATIONS)
    tables = set(db.table_names())
    assert {"datasets", "jobs", "job_events", "artifacts"} <= tables
    assert migrate(db) == len(migrations.MIGRATIONS)  # second run: nothing to do, nothing fails
    assert set(db.table_names()) == tables
    reopened = open_db(tmp_path / "e.db")
    assert schema_version(reopened) == len(migrations.MIGRATIONS)


def test_contract_columns(db):
    columns = {name: set(db[name].columns_dict) for name in ("datasets", "jobs", "job_events", "artifacts")}
    assert columns["datasets"] == {
        "id", "name", "sha256", "kind", "format", "num_samples", "classes", "shape", "blob", "size_bytes", "created_at"
    }
    assert {"id", "state", "stage", "progress", "model", "dataset_id", "method", "config", "error", "metrics",
            "created_at", "started_at", "finished_at", "worker_pid", "cancel_requested"} == columns["jobs"]
    assert columns["job_events"] == {"id", "job_id", "ts", "type", "stage", "data"}
    assert columns["artifacts"] == {"job_id", "name", "blob", "size_bytes", "media_type", "created_at"}


def test_a_failing_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    db = open_db(tmp_path / "e.db")
    migrate(db)
    version = schema_version(db)

    def broken(database):
        database.execute("CREATE TABLE half_done (x INTEGER)")
        database.execute("INSERT INTO no_such_table VALUES (1)")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, broken])
    monkeypatch.setattr("edged.store.db.MIGRATIONS", migrations.MIGRATIONS)
    with pytest.raises(sqlite3.OperationalError):
        migrate(db)
    assert "half_done" not in db.table_names()
    assert schema_version(db) == version


def test_foreign_keys_are_enforced(db):
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO job_events (job_id, ts, type, data) VALUES ('no-such-job', 0, 'stage', '{}')"
        )


def test_a_second_connection_sees_committed_writes(db, settings):
    db["jobs"].insert({"id": "j1", "state": "queued", "model": "m", "method": "taskedge", "created_at": "now"})
    other = open_db(settings.db_path)
    assert [r["id"] for r in other.query("SELECT id FROM jobs")] == ["j1"]


def test_a_transaction_that_reads_then_writes_waits_for_another_writer_instead_of_failing(tmp_path):
    """Deferred, the reader's snapshot goes stale when the other connection commits, and its write fails at
    once with "database is locked" (SQLite cannot wait its way out of that); begun IMMEDIATE, it cannot."""
    path = tmp_path / "edged.db"
    first, second = open_db(path), open_db(path)
    first.execute("CREATE TABLE t (v INTEGER)")
    read, errors = threading.Event(), []

    def other_writer() -> None:
        read.wait(5)
        try:
            second.execute("INSERT INTO t VALUES (2)")
            second.conn.commit()
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_writer)
    thread.start()
    with first.atomic():
        first.execute("SELECT count(*) FROM t").fetchone()
        read.set()
        time.sleep(0.3)  # the other connection tries to write now
        first.execute("INSERT INTO t VALUES (1)")
    thread.join(15)
    assert errors == []
    assert sorted(r[0] for r in first.execute("SELECT v FROM t").fetchall()) == [1, 2]

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


def test_migration_8_makes_a_minute_without_requests_null_and_keeps_the_others(tmp_path):
    db = open_db(tmp_path / "edged.db")
    for version, migration in enumerate(migrations.MIGRATIONS[:7], start=1):  # a database of the version before
        migration(db)
        db.execute(f"PRAGMA user_version = {version}")
    row = {"task_id": "t", "switches": 1, "switch_ms_mean": 2.0, "energy_j": None, "energy_per_inference_j": None}
    db.table("task_minutes").insert_all([
        {**row, "minute": 60, "requests": 0, "samples": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0},
        {**row, "minute": 120, "requests": 3, "samples": 5, "p50_ms": 4.0, "p95_ms": 5.0, "p99_ms": 6.0}])
    assert migrate(db) == len(migrations.MIGRATIONS)
    rows = {r["minute"]: r for r in db.query("SELECT * FROM task_minutes")}
    assert (rows[60]["p50_ms"], rows[60]["p99_ms"], rows[60]["switches"]) == (None, None, 1)
    assert (rows[120]["requests"], rows[120]["p50_ms"], rows[120]["p99_ms"]) == (3, 4.0, 6.0)


def test_serving_totals_report_the_latest_minute_that_answered_a_request(db):
    from edged.tasks.records import record_minutes, serving_totals

    row = {"task_id": "t", "switch_ms_mean": 2.0, "energy_j": None, "energy_per_inference_j": None}
    record_minutes(db, [
        {**row, "minute": 60, "requests": 2, "samples": 4, "switches": 1, "p50_ms": 4.0, "p95_ms": 5.0, "p99_ms": 6.0},
        {**row, "minute": 120, "requests": 0, "samples": 0, "switches": 1, "p50_ms": None, "p95_ms": None,
         "p99_ms": None}])
    [totals] = serving_totals(db)
    assert (totals["requests"], totals["switches"], totals["p50_ms"], totals["p99_ms"]) == (2, 2, 4.0, 6.0)

"""The task tables' schema (migration 3), apart from their queries so that the migrations import no store code.

- tasks: one published task per succeeded job (`job_id`, set NULL when the job is deleted: a task outlives
  it); `base_model`, `model_options` (JSON) and `seed` name the resident base it runs on; `sparsity` none or
  2:4; `classes` JSON list; `delta_blob` the sha256 of its delta (shared with the job's artifact), `delta_bytes` its size.
- task_switches: one row per switch of a resident base (`at` Unix s, `seconds` on the device, `bytes_moved`,
  `cache` hot / cold / prefetched); the newest rows are kept.
- task_minutes: predictions per task and minute (`minute` Unix s at its start): requests, samples, latency
  percentiles in ms, switches to the task and their mean ms; rows older than the retention are deleted.
  Migration 4 adds `energy_j` (J the power source measured over the minute's forwards of the task) and
  `energy_per_inference_j` (those joules over the samples they cover); both NULL where no source reads.
- Migration 5 adds `tasks.features`: the features per sample a tabular task takes (its dataset's), so a predict
  with another count is told so; NULL for image and text tasks and for tasks published before it.
- Migration 6 (`m006_task_compiled_artifact`): the tasks' compiled artifact: `compiled_backend` (the job's compile backend,
  NULL when it compiled none), `compiled_artifact` (the artifact's name, e.g. model.onnx) and `compiled_blob` (its
  sha256, shared with the job's artifact), so a task keeps serving through it after its job is deleted.
- Migration 8 (`m008_task_minutes_nullable_latency`): `task_minutes.p50_ms`/`p95_ms`/`p99_ms` may be NULL, for a
  minute with switches to the task but no answered request (no latency was measured); such rows written before
  it held 0 and become NULL.
"""

from __future__ import annotations

import sqlite_utils


def m003_task_tables(db: sqlite_utils.Database) -> None:
    """Migration 3: `tasks` (published tasks) and `task_switches` (each switch of a resident base)."""
    db.execute(
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            job_id TEXT UNIQUE REFERENCES jobs(id) ON DELETE SET NULL,
            base_model TEXT NOT NULL,
            kind TEXT NOT NULL,
            model_options TEXT NOT NULL DEFAULT '{}',
            seed INTEGER NOT NULL,
            method TEXT NOT NULL,
            sparsity TEXT NOT NULL,
            classes TEXT NOT NULL,
            delta_blob TEXT NOT NULL,
            delta_bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE task_switches (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            base TEXT NOT NULL,
            from_task TEXT,
            to_task TEXT NOT NULL,
            seconds REAL NOT NULL,
            bytes_moved INTEGER NOT NULL,
            cache TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE task_minutes (
            task_id TEXT NOT NULL,
            minute INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            samples INTEGER NOT NULL,
            p50_ms REAL NOT NULL,
            p95_ms REAL NOT NULL,
            p99_ms REAL NOT NULL,
            switches INTEGER NOT NULL,
            switch_ms_mean REAL,
            PRIMARY KEY (task_id, minute)
        )"""
    )


def m004_task_energy(db: sqlite_utils.Database) -> None:
    """Migration 4: energy per task and minute (`task_minutes.energy_j`, `task_minutes.energy_per_inference_j`)."""
    db.execute("ALTER TABLE task_minutes ADD COLUMN energy_j REAL")
    db.execute("ALTER TABLE task_minutes ADD COLUMN energy_per_inference_j REAL")


def m005_task_features(db: sqlite_utils.Database) -> None:
    """Migration 5: `tasks.features`, the features per sample of a tabular task."""
    db.execute("ALTER TABLE tasks ADD COLUMN features INTEGER")


def m006_task_compiled_artifact(db: sqlite_utils.Database) -> None:
    """The compiled artifact a task serves through (NULL: none; tasks published before this migration serve eager)."""
    for column in ("compiled_backend", "compiled_artifact", "compiled_blob"):
        db.execute(f"ALTER TABLE tasks ADD COLUMN {column} TEXT")


def m008_task_minutes_nullable_latency(db: sqlite_utils.Database) -> None:
    """`task_minutes` rebuilt with nullable percentiles (SQLite cannot drop a NOT NULL in place)."""
    db.execute(
        """CREATE TABLE task_minutes_new (
            task_id TEXT NOT NULL,
            minute INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            samples INTEGER NOT NULL,
            p50_ms REAL,
            p95_ms REAL,
            p99_ms REAL,
            switches INTEGER NOT NULL,
            switch_ms_mean REAL,
            energy_j REAL,
            energy_per_inference_j REAL,
            PRIMARY KEY (task_id, minute)
        )"""
    )
    db.execute(
        """INSERT INTO task_minutes_new
           SELECT task_id, minute, requests, samples,
                  CASE WHEN requests > 0 THEN p50_ms END, CASE WHEN requests > 0 THEN p95_ms END,
                  CASE WHEN requests > 0 THEN p99_ms END, switches, switch_ms_mean, energy_j, energy_per_inference_j
           FROM task_minutes"""
    )
    db.execute("DROP TABLE task_minutes")
    db.execute("ALTER TABLE task_minutes_new RENAME TO task_minutes")

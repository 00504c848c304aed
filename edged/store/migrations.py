"""The database schema as numbered migrations: APPEND ONLY.

Migration N is `MIGRATIONS[N - 1]`; a database records the last one applied in PRAGMA user_version.
Never edit or reorder an entry that has shipped: add a new function at the end instead.
Each runs inside a transaction (see `edged.store.db.migrate`), so it must not change journal mode.

Tables (the contract the API, the job worker and the dashboard code against):
- datasets: one row per distinct upload (`sha256` of the uploaded bytes is unique; `blob` names the
  stored original, the same digest). `classes` JSON list of names (label i is classes[i]); `shape` JSON
  list, the shape of ONE sample ([C, H, W] images, [F] tabular, null for text). Times are ISO 8601 UTC.
- jobs: one adaptation job. `state` queued|running|succeeded|failed|cancelled|interrupted; `stage` the
  pipeline stage; `progress` 0..1; `config` and `metrics` JSON objects; `dataset_id` is set to NULL
  when a finished job's dataset is deleted (datasets in use by queued/running jobs cannot be).
- job_events: what a job reported, in order (`id`); `ts` Unix seconds; `data` JSON.
- artifacts: files a job produced, stored as blobs; `media_type` a MIME type.
"""

from __future__ import annotations

from typing import Callable

import sqlite_utils

from edged.tasks.pattern_schema import m007_base_patterns
from edged.tasks.schema import (
    m003_task_tables,
    m004_task_energy,
    m005_task_features,
    m006_task_compiled_artifact,
    m008_task_minutes_nullable_latency,
)
from edged.telemetry.schema import m002_telemetry_tables

Migration = Callable[[sqlite_utils.Database], None]


def m001_core_tables(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE datasets (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            format TEXT NOT NULL,
            num_samples INTEGER NOT NULL,
            classes TEXT NOT NULL,
            shape TEXT,
            blob TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            stage TEXT,
            progress REAL NOT NULL DEFAULT 0,
            model TEXT NOT NULL,
            dataset_id TEXT REFERENCES datasets(id) ON DELETE SET NULL,
            method TEXT NOT NULL,
            config TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            metrics TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            worker_pid INTEGER,
            cancel_requested INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX jobs_state ON jobs(state)")
    db.execute("CREATE INDEX jobs_dataset_id ON jobs(dataset_id)")
    db.execute(
        """CREATE TABLE job_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            ts REAL NOT NULL,
            type TEXT NOT NULL,
            stage TEXT,
            data TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute("CREATE INDEX job_events_job_id ON job_events(job_id, id)")
    db.execute(
        """CREATE TABLE artifacts (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            blob TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            media_type TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (job_id, name)
        )"""
    )


MIGRATIONS: list[Migration] = [
    m001_core_tables,
    m002_telemetry_tables,  # telemetry_samples, job_stage_telemetry: see edged/telemetry/schema.py
    m003_task_tables,  # tasks, task_switches: see edged/tasks/schema.py
    m004_task_energy,  # task_minutes.energy_j, energy_per_inference_j: see edged/tasks/schema.py
    m005_task_features,  # tasks.features: see edged/tasks/schema.py
    m006_task_compiled_artifact,  # tasks.compiled_backend/_artifact/_blob (issue 11): see edged/tasks/schema.py
    m007_base_patterns,  # base_patterns (the shared 2:4 pattern per base): see edged/tasks/pattern_schema.py
    m008_task_minutes_nullable_latency,  # task_minutes percentiles NULL without requests: see edged/tasks/schema.py
]

"""The telemetry tables: migration 2 of `edged.store.migrations.MIGRATIONS`.

Their columns, units and meaning are documented in the README's database section ("### Table ..."
headings); tests/test_readme.py checks that it names exactly the tables and columns the migrations create.
"""

from __future__ import annotations

import sqlite_utils


def m002_telemetry_tables(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE telemetry_samples (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            job_id TEXT,
            source TEXT NOT NULL,
            power_w REAL,
            energy_j REAL,
            gpu_util_pct REAL,
            cpu_util_pct REAL,
            mem_used_mb REAL,
            temp_c REAL,
            rails TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute("CREATE INDEX telemetry_samples_ts ON telemetry_samples(ts)")
    db.execute("CREATE INDEX telemetry_samples_job_ts ON telemetry_samples(job_id, ts)")
    db.execute(
        """CREATE TABLE job_stage_telemetry (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            stage TEXT NOT NULL,
            started_at REAL NOT NULL,
            wall_s REAL NOT NULL,
            energy_j REAL,
            energy_method TEXT,
            peak_host_mb REAL,
            peak_gpu_mb REAL,
            items INTEGER,
            items_per_s REAL,
            source TEXT NOT NULL,
            PRIMARY KEY (job_id, stage)
        )"""
    )


# Columns of telemetry_samples a client may ask for by name (GET /v1/telemetry?metrics=...).
SAMPLE_METRICS = ("power_w", "energy_j", "gpu_util_pct", "cpu_util_pct", "mem_used_mb", "temp_c", "rails")

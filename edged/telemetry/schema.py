"""The telemetry tables: migration 2 of `edged.store.migrations.MIGRATIONS`, and their docs.

`SCHEMA_MARKDOWN` is the documentation the README carries (and a test checks it names every
column, so the two cannot drift apart).
"""

from __future__ import annotations

import sqlite_utils

SCHEMA_MARKDOWN = """\
### `telemetry_samples`: one row per sampler tick

The daemon samples every `EDGED_TELEMETRY_INTERVAL_S` seconds while a job runs and every
`max(5, that)` seconds otherwise; rows beyond `EDGED_TELEMETRY_RETENTION_ROWS` are pruned, oldest first.

| column | type | unit | meaning |
|---|---|---|---|
| `id` | INTEGER | | increasing row id; retention deletes the lowest |
| `ts` | REAL | Unix s | when the sample was read |
| `job_id` | TEXT | | the job running at that time, NULL when idle |
| `source` | TEXT | | power source: `jtop`, `nvml`, `rapl` or `none` |
| `power_w` | REAL | W | total power the source sees: board input (jtop), GPUs (nvml), CPU packages (rapl) |
| `energy_j` | REAL | J | energy since the previous row (hardware counter, else trapezoid of power); sum a range for its energy |
| `gpu_util_pct` | REAL | % | GPU utilisation (mean over GPUs) |
| `cpu_util_pct` | REAL | % | CPU utilisation over all cores since the previous row |
| `mem_used_mb` | REAL | MiB | host RAM in use (on a Jetson shared by CPU and GPU) |
| `temp_c` | REAL | °C | hottest temperature the source reports |
| `rails` | TEXT | W | JSON object rail name -> power (Jetson rails, `gpu0`..., `package-0`...) |

Missing values are NULL. Indexes: `ts`, `(job_id, ts)`.

### `job_stage_telemetry`: one row per (job, pipeline stage)

| column | type | unit | meaning |
|---|---|---|---|
| `job_id` | TEXT | | `jobs.id` (rows go with their job) |
| `stage` | TEXT | | pipeline stage: calibrate, score, train, evaluate, export, compile, benchmark, ... |
| `started_at` | REAL | Unix s | when the stage started (a resumed stage overwrites its row) |
| `wall_s` | REAL | s | wall-clock duration |
| `energy_j` | REAL | J | energy the power source measured over the stage; NULL without a source |
| `energy_method` | TEXT | | `counter`, `trapezoid`, `mixed` or NULL |
| `peak_host_mb` | REAL | MiB | peak resident memory of the process running the stage |
| `peak_gpu_mb` | REAL | MiB | peak CUDA memory allocated during the stage; NULL without CUDA |
| `items` | INTEGER | | items the stage processed (training: samples seen), or NULL |
| `items_per_s` | REAL | 1/s | `items / wall_s` (training samples/s) |
| `source` | TEXT | | power source used |
"""


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

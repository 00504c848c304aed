"""Per-job, per-stage telemetry rows (`job_stage_telemetry`): wall time, energy, peak memory, rate.

The pipeline's StageTimer measures each stage and hands the measurement to `stage_recorder(db, job_id,
source_name)`, which writes the stage's row as the stage ends (also when it raised).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import sqlite_utils

from edged.telemetry.energy import StageMeasurement


def record_stage(
    db: sqlite_utils.Database,
    job_id: str,
    stage: str,
    measurement: StageMeasurement,
    source_name: str,
    items: Optional[int] = None,
    started_at: Optional[float] = None,
) -> dict[str, Any]:
    """Insert or replace the (job_id, stage) row; returns the row written."""
    row = {
        "job_id": job_id,
        "stage": stage,
        "started_at": started_at if started_at is not None else time.time() - measurement.seconds,
        "wall_s": measurement.seconds,
        "energy_j": measurement.joules,
        "energy_method": measurement.energy_method,
        "peak_host_mb": measurement.peak_host_mb,
        "peak_gpu_mb": measurement.peak_gpu_mb,
        "items": items,
        "items_per_s": items / measurement.seconds if items is not None and measurement.seconds > 0 else None,
        "source": source_name,
    }
    db.table("job_stage_telemetry").insert(row, replace=True)
    return row


def stage_recorder(db: sqlite_utils.Database, job_id: str,
                   source_name: str) -> Callable[[str, StageMeasurement, float, Optional[int]], None]:
    """`record(stage, measurement, started_at, items)`: writes the stage's row of job `job_id`."""

    def record(stage: str, measurement: StageMeasurement, started_at: float, items: Optional[int]) -> None:
        record_stage(db, job_id, stage, measurement, source_name, items, started_at)

    return record


def stage_rows(db: sqlite_utils.Database, job_id: str) -> list[dict[str, Any]]:
    """A job's stage rows in the order they ran."""
    return list(db.query(
        "SELECT * FROM job_stage_telemetry WHERE job_id = ? ORDER BY started_at", [job_id]
    ))

"""Per-job, per-stage telemetry rows (`job_stage_telemetry`): wall time, energy, peak memory, rate.

Use around a pipeline stage:

    with recorded_stage(db, job_id, "train", source) as stage:
        ... train ...
        stage.items = samples_seen          # optional: gives items_per_s

A stage that raises still gets its row (what it cost before failing), then the error propagates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import sqlite_utils

from edged.telemetry.energy import EnergyMeter, StageMeasurement
from edged.telemetry.reading import PowerSource


@dataclass
class StageItems:
    items: Optional[int] = None  # set by the stage: samples (or batches) it processed


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


@contextmanager
def recorded_stage(
    db: sqlite_utils.Database, job_id: str, stage: str, source: PowerSource, interval_s: float = 0.2
) -> Iterator[StageItems]:
    counted = StageItems()
    started_at = time.time()
    meter = EnergyMeter(source, interval_s=interval_s)
    try:
        with meter:
            yield counted
    finally:
        assert meter.result is not None
        record_stage(db, job_id, stage, meter.result, source.name, counted.items, started_at)


def stage_rows(db: sqlite_utils.Database, job_id: str) -> list[dict[str, Any]]:
    """A job's stage rows in the order they ran."""
    return list(db.query(
        "SELECT * FROM job_stage_telemetry WHERE job_id = ? ORDER BY started_at", [job_id]
    ))

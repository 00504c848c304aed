"""What the dashboard shows of each job: its row, its metrics JSON parsed, its per-stage telemetry, and
for one job its training curve (train loss and validation accuracy per epoch, from its `epoch` events).

The job pipeline writes `jobs.metrics` as a JSON object; the dashboard reads these keys when present:
`accuracy_before`, `accuracy_after` (0..1), `trainable_fraction` (0..1) and `latency`, an object
variant name -> `LatencyStats.as_dict()`, e.g. {"dense": {...}, "sparse_2_4": {...}}
(`edged.measure.latency.latency_metrics()` builds it).
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from edged.jobs import records
from edged.tasks import records as task_records
from edged.telemetry.stages import stage_rows

JOB_COLUMNS = ("id", "state", "stage", "progress", "model", "method", "error",
               "created_at", "started_at", "finished_at", "metrics")


def recent_jobs(db: sqlite_utils.Database, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` jobs with `metrics` parsed and their `stages` telemetry attached."""
    return [{**{column: job[column] for column in JOB_COLUMNS}, "stages": stage_rows(db, job["id"])}
            for job in records.list_jobs(db, limit)]


EPOCH_LIMIT = 1000  # a job's last epochs the curve draws; bounds the response of a very long run


def training_curve(db: sqlite_utils.Database, job_id: str) -> dict[str, Any]:
    """{"job_id", "epochs": [{"epoch", "train_loss", "val_accuracy"}]} oldest first; NotFound for an unknown job."""
    records.get_job(db, job_id)
    epochs = [{"epoch": event["epoch"], "train_loss": event.get("train_loss"), "val_accuracy": event.get("val_accuracy")}
              for event in records.epoch_events(db, job_id, EPOCH_LIMIT)]
    return {"job_id": job_id, "epochs": epochs}


def published_tasks(db: sqlite_utils.Database, limit: int = 100) -> list[dict[str, Any]]:
    """The newest tasks with their serving totals (requests, samples, switches, the latest minute's latency)."""
    totals = {row["task_id"]: row for row in task_records.serving_totals(db)}
    empty = {"requests": 0, "samples": 0, "switches": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
    return [{"id": t["id"], "base_model": t["base_model"], "method": t["method"], "classes": len(t["classes"]),
             "created_at": t["created_at"], **{k: v for k, v in totals.get(t["id"], empty).items() if k != "task_id"}}
            for t in task_records.list_tasks(db, limit)]

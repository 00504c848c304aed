"""Reading `telemetry_samples` back for the API: a time range, chosen metrics, one job, bounded size.

Up to `max_points` rows come back as they are. A longer range is averaged into `max_points`
equal time buckets (energy summed, so the energy of the range is unchanged), which keeps a
week-long chart as cheap as a minute-long one.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

import sqlite_utils

from edged.errors import InvalidInput
from edged.telemetry.schema import SAMPLE_METRICS

DEFAULT_WINDOW_S = 3600.0


def parse_metrics(spec: Optional[str]) -> list[str]:
    if not spec:
        return list(SAMPLE_METRICS)
    names = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in SAMPLE_METRICS]
    if unknown or not names:
        raise InvalidInput(f"unknown metrics {unknown}; accepted: {', '.join(SAMPLE_METRICS)}")
    return names


def _range(since: Optional[float], until: Optional[float], job_id: Optional[str]) -> tuple[float, float]:
    until = time.time() if until is None else until
    if since is None:  # a job's whole history, else the last hour
        since = 0.0 if job_id is not None else until - DEFAULT_WINDOW_S
    if since > until:
        raise InvalidInput(f"since ({since}) is after until ({until}); both are Unix seconds")
    return since, until


def query_samples(
    db: sqlite_utils.Database,
    since: Optional[float] = None,
    until: Optional[float] = None,
    metrics: Optional[list[str]] = None,
    job_id: Optional[str] = None,
    max_points: int = 1000,
) -> dict[str, Any]:
    """{"since", "until", "job_id", "metrics", "bucket_s", "count", "energy_j", "samples": [...]}.

    `count` is the number of stored rows in range, `energy_j` their summed energy (None if none
    had any), `bucket_s` the bucket width when rows were averaged (None when returned as stored).
    """
    metrics = metrics or list(SAMPLE_METRICS)
    since, until = _range(since, until, job_id)
    where = "ts >= ? AND ts <= ?"
    params: list[Any] = [since, until]
    if job_id is not None:
        where, params = where + " AND job_id = ?", [*params, job_id]
    count, energy = db.execute(
        f"SELECT count(*), sum(energy_j) FROM telemetry_samples WHERE {where}", params
    ).fetchone()
    if count <= max_points:
        cols = ", ".join(["ts", "job_id", *metrics])
        rows = [dict(r) for r in db.query(f"SELECT {cols} FROM telemetry_samples WHERE {where} ORDER BY ts", params)]
        for r in rows:
            if "rails" in r:
                r["rails"] = json.loads(r["rails"])
        bucket = None
    else:
        bucket = (until - since) / max_points
        rows = _bucketed(db, where, params, metrics, since, bucket)
    return {"since": since, "until": until, "job_id": job_id, "metrics": metrics, "bucket_s": bucket,
            "count": count, "energy_j": energy, "samples": rows}


def _bucketed(
    db: sqlite_utils.Database, where: str, params: list[Any], metrics: list[str], since: float, bucket: float
) -> list[dict[str, Any]]:
    aggregates = {m: f"sum({m})" if m == "energy_j" else f"avg({m})" for m in metrics if m != "rails"}
    cols = ", ".join(f"{agg} AS {m}" for m, agg in aggregates.items())
    sql = (
        f"SELECT CAST((ts - ?) / ? AS INTEGER) AS bucket, max(ts) AS ts, max(job_id) AS job_id"
        f"{', ' + cols if cols else ''} FROM telemetry_samples WHERE {where} GROUP BY bucket ORDER BY bucket"
    )
    rows = [dict(r) for r in db.query(sql, [since, bucket, *params])]
    for r in rows:
        del r["bucket"]
        if "rails" in metrics:
            r["rails"] = None  # per-rail power is not averaged: ask for a shorter range
    return rows

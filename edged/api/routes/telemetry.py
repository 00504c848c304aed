"""GET /v1/telemetry (samples as JSON) and GET /metrics (Prometheus text format)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from edged.api.deps import DbDep
from edged.jobs import records
from edged.tasks import records as tasks
from edged.telemetry.prometheus import render_metrics
from edged.telemetry.query import query_samples, parse_metrics
from edged.telemetry.schema import SAMPLE_METRICS
from edged.telemetry.stages import stage_rows

router = APIRouter(tags=["telemetry"])


class TelemetryPublic(BaseModel):
    source: Optional[str] = Field(description="power source the daemon samples: jtop, ina3221, nvml, rapl, none")
    since: float = Field(description="start of the range, Unix seconds")
    until: float = Field(description="end of the range, Unix seconds")
    job_id: Optional[str] = Field(description="the job the samples were filtered to, or null")
    metrics: list[str] = Field(description="the columns in each sample besides ts and job_id")
    bucket_s: Optional[float] = Field(description="bucket width when samples were averaged, else null")
    count: int = Field(description="stored samples in the range")
    energy_j: Optional[float] = Field(description="energy over the range, J (sum of the samples' energy_j)")
    samples: list[dict[str, Any]] = Field(description="rows of telemetry_samples (units in the README)")
    stages: Optional[list[dict[str, Any]]] = Field(
        None, description="with job_id: the job's job_stage_telemetry rows (wall_s, energy_j, peak memory)"
    )


def _sampler(request: Request) -> Any:
    return getattr(request.app.state, "sampler", None)


@router.get("/v1/telemetry", response_model=TelemetryPublic, summary="Power, energy, utilisation over time")
def get_telemetry(
    request: Request,
    db: DbDep,
    since: Annotated[Optional[float], Query(description="Unix seconds; default: an hour ago, or all of job_id")] = None,
    until: Annotated[Optional[float], Query(description="Unix seconds; default: now")] = None,
    metrics: Annotated[
        Optional[str], Query(description=f"comma-separated subset of: {', '.join(SAMPLE_METRICS)} (default all)")
    ] = None,
    job_id: Annotated[Optional[str], Query(description="only samples taken while this job ran")] = None,
    max_points: Annotated[int, Query(ge=10, le=20_000, description="longer ranges are averaged into buckets")] = 1000,
) -> TelemetryPublic:
    result = query_samples(db, since, until, parse_metrics(metrics), job_id, max_points)
    sampler = _sampler(request)
    stages = stage_rows(db, job_id) if job_id is not None else None
    return TelemetryPublic(source=sampler.source.name if sampler else None, stages=stages, **result)


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response)
def get_metrics(request: Request, db: DbDep) -> Response:
    server = getattr(request.app.state, "tasks", None)  # absent before the lifespan started it
    return Response(render_metrics(db, _sampler(request), records.count_by_state(db), tasks.serving_totals(db),
                                   server.stats() if server else None), media_type=CONTENT_TYPE_LATEST)

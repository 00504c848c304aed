"""/dashboard: the page (served from edged/api/static, nothing fetched from the internet) and its data."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from edged.api.deps import DbDep
from edged.api.errors import error_responses
from edged.api.jobs_view import published_tasks, recent_jobs, training_curve
from edged.errors import NotFound
from edged.telemetry.query import query_samples

router = APIRouter(tags=["dashboard"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}\.(js|css|svg)$")  # bounded: a long name is no file (ENAMETOOLONG)
_MEDIA_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
# The over-time charts: power and energy where a power source exists, host statistics wherever psutil runs.
CHART_METRICS = ["power_w", "energy_j", "cpu_util_pct", "gpu_util_pct", "mem_used_mb", "temp_c"]
CHART_POINTS = 600  # a longer window is averaged into this many buckets


@router.get("/dashboard", response_class=FileResponse, summary="The dashboard page (HTML)")
def dashboard_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/assets/{name}", response_class=FileResponse, responses=error_responses(404),
            summary="The dashboard's scripts and styles")
def dashboard_asset(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if not _ASSET_NAME.match(name) or not path.is_file():
        raise NotFound(f"no dashboard asset {name!r}; assets are the .js/.css/.svg files in edged/api/static")
    return FileResponse(path, media_type=_MEDIA_TYPES[name.rsplit(".", 1)[1]])


@router.get("/dashboard/data", responses=error_responses(404),
            summary="Jobs, one job's training curve, telemetry over a window, and the published tasks, for the dashboard")
def dashboard_data(
    request: Request,
    db: DbDep,
    job: Annotated[Optional[str], Query(max_length=100, description="the job whose epochs to draw; default the newest")] = None,
    window_s: Annotated[float, Query(gt=0, le=7 * 86400, description="telemetry over the last this many seconds")] = 900,
) -> dict[str, Any]:
    sampler = getattr(request.app.state, "sampler", None)
    server = getattr(request.app.state, "tasks", None)  # the task server, once the lifespan started it
    now = time.time()
    jobs = recent_jobs(db)
    selected = job or (jobs[0]["id"] if jobs else None)
    return {
        "now": now,
        "source": sampler.source.name if sampler else None,
        "jobs": jobs,
        "training": training_curve(db, selected) if selected else None,
        "telemetry": query_samples(db, since=now - window_s, until=now, metrics=CHART_METRICS, max_points=CHART_POINTS),
        "tasks": published_tasks(db),
        "serving": server.stats() if server else None,
    }

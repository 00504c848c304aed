"""/dashboard: the page (served from edged/api/static, nothing fetched from the internet) and its data."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from edged.api.deps import DbDep
from edged.api.errors import error_responses
from edged.api.jobs_view import recent_jobs
from edged.errors import NotFound

router = APIRouter(tags=["dashboard"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}\.(js|css|svg)$")  # bounded: a long name is no file (ENAMETOOLONG)
_MEDIA_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}


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


@router.get("/dashboard/data", summary="Jobs (state, progress, metrics, stage telemetry) for the dashboard")
def dashboard_data(request: Request, db: DbDep) -> dict[str, Any]:
    sampler = getattr(request.app.state, "sampler", None)
    return {
        "now": time.time(),
        "source": sampler.source.name if sampler else None,
        "jobs": recent_jobs(db),
    }

"""GET /healthz: liveness for load balancers and `edged demo`; the one route without auth."""

from __future__ import annotations

from fastapi import APIRouter

import edged
from edged.api.deps import DbDep
from edged.api.schemas import Health
from edged.store.db import schema_version

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Is the daemon up and its database readable?")
async def healthz(db: DbDep) -> Health:
    return Health(status="ok", version=edged.__version__, schema_version=schema_version(db))

"""The FastAPI application: `create_app(settings)`.

To serve a new resource, add its router to ROUTERS. Every path needs the bearer token except those
in PUBLIC_PATHS. Background services (job manager, telemetry sampler) start and stop in `lifespan`.

Routes that read a row or two (GET of jobs, datasets, artifacts, /healthz, the event stream) are
`async def` and use a pooled connection (edged.store.pool): they run on the event loop with no thread
hand-off, which under 50 concurrent clients cost more than the queries. Routes that parse uploads,
build models, or may scan many rows stay `def`, in the threadpool (SQLite releases the GIL there).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

import edged
from edged.api.errors import install_error_handlers
from edged.api.middleware import BearerAuthMiddleware, BodyLimitMiddleware
from edged.api.routes import dashboard, datasets, health, jobs, models, tasks, telemetry
from edged.api.schemas import ErrorBody
from edged.data.decode_budget import DecodeGate
from edged.jobs import records
from edged.jobs.manager import JobManager
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import migrate, open_db
from edged.store.pool import ConnectionPool
from edged.tasks.server import TaskServer
from edged.telemetry.service import start_sampler

ROUTERS: list[APIRouter] = [
    health.router,
    datasets.router,
    jobs.router,
    models.router,
    tasks.router,
    telemetry.router,
    dashboard.router,
]
PUBLIC_PATHS = frozenset({"/healthz", "/dashboard"})
# The dashboard's page and static assets hold no data (its data calls carry the token), so a browser can open it.
PUBLIC_PREFIXES = ("/dashboard/assets/",)

# Room for the multipart envelope and small form fields around an upload of max_upload_mb.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [(401, "missing or wrong bearer token"), (422, "invalid input"), (500, "internal")]
}


def prepare_store(settings: Settings) -> None:
    """Create the data directory and bring the database schema up to date."""
    settings.blobs_dir.mkdir(parents=True, exist_ok=True)
    db = open_db(settings.db_path)
    try:
        migrate(db)
    finally:
        db.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    prepare_store(settings)
    async with AsyncExitStack() as services:
        services.callback(app.state.db_pool.close)  # last: after the services that use the store
        # Start background services here, after the store is ready, registering each one's stop
        # with `services.push_async_callback(...)` / `services.callback(...)`: they stop in
        # reverse order at shutdown, before the process exits.
        #   - job manager (worker process, resume of interrupted jobs)
        #   - telemetry sampler
        app.state.sampler = start_sampler(settings, records.running_job_id)
        services.callback(app.state.sampler.stop)
        app.state.tasks = TaskServer(settings, app.state.blobs)  # the inference thread of published tasks
        app.state.tasks.start()
        services.callback(app.state.tasks.stop)
        app.state.jobs = JobManager(settings)
        app.state.jobs.start()
        services.callback(app.state.jobs.stop)  # stops first: the worker, then the sampler
        services.callback(app.state.stopping.set)  # without edged.serve (TestClient), streams end here
        yield


def create_app(settings: Settings) -> FastAPI:
    """The API app for `settings`; nothing touches the disk until the lifespan starts."""
    token = settings.serving_token()
    app = FastAPI(
        title="edged",
        version=edged.__version__,
        description="On-device sparse fine-tuning daemon. Every route but GET /healthz needs "
        "`Authorization: Bearer <EDGED_TOKEN>`.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    # Set when the daemon starts to stop (edged.serve), before it waits for open connections: SSE streams end.
    app.state.stopping = threading.Event()  # a thread event: TestClient may run each request on its own loop
    app.state.blobs = BlobStore(settings.blobs_dir)
    app.state.decode_gate = DecodeGate(settings.max_concurrent_decodes, settings.decode_wait_s)
    app.state.db_pool = ConnectionPool(settings.db_path)
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=int(settings.upload_limits().max_upload_bytes) + MULTIPART_OVERHEAD_BYTES
    )
    # Outermost: runs first.
    app.add_middleware(BearerAuthMiddleware, token=token, public_paths=PUBLIC_PATHS, public_prefixes=PUBLIC_PREFIXES)
    app.openapi = lambda: _openapi_with_bearer(app)  # type: ignore[method-assign]
    return app


def _openapi_with_bearer(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with the bearer scheme on every operation outside PUBLIC_PATHS (as the middleware does)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema.get("paths", {}).items():
            if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema

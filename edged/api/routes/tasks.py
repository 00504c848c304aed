"""/v1/tasks: the published tasks, their deletion, and predictions on each (served from one resident base per
base model, see edged.tasks); /v1/serving: the task server's cache, prefetch and switch counts."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from edged.api.deps import BlobsDep, DbDep, SettingsDep
from edged.api.errors import error_responses
from edged.api.schemas import PredictResponse, TaskPublic
from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput
from edged.tasks import records
from edged.tasks.compiled import serving_route
from edged.tasks.inputs import ACCEPTED, Samples, samples_from_files, texts_from_json
from edged.tasks.server import TaskServer

router = APIRouter(tags=["tasks"])


@router.get("/v1/tasks", response_model=list[TaskPublic], summary="List published tasks, newest first")
async def list_tasks(db: DbDep, settings: SettingsDep,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> list[TaskPublic]:
    return [_public(row, settings.device) for row in records.list_tasks(db, limit)]


@router.get("/v1/tasks/{task_id}", response_model=TaskPublic, responses=error_responses(404), summary="Show a task")
async def get_task(task_id: str, db: DbDep, settings: SettingsDep) -> TaskPublic:
    return _public(records.get_task(db, task_id), settings.device)


def _public(row: dict[str, Any], device: str) -> TaskPublic:
    route = serving_route(row, device)  # the task server routes its predicts by the same function
    return TaskPublic(**row, serving_backend=route.backend, serving_backend_reason=route.reason)


@router.delete("/v1/tasks/{task_id}", status_code=204, responses=error_responses(404),
               summary="Delete a task: its row, its delta from the cache and from its resident base")
async def delete_task(task_id: str, request: Request, db: DbDep, blobs: BlobsDep) -> Response:
    unreferenced = records.delete_task(db, task_id)
    await asyncio.wrap_future(_server(request).forget(task_id))
    for digest in unreferenced:
        blobs.delete(digest)
    return Response(status_code=204)


@router.post("/v1/tasks/{task_id}/predict", response_model=PredictResponse,
             responses=error_responses(404, 409, 413, 422, 503),
             summary="Top-k classes of images (multipart files or an .npz) or texts (JSON) on a task")
async def predict(task_id: str, request: Request, db: DbDep, settings: SettingsDep,
                  top_k: Annotated[int, Query(ge=1, le=100, description="classes per sample")] = 3,
                  logits: Annotated[bool, Query(description="also return the raw logits")] = False) -> dict[str, Any]:
    task = records.get_task(db, task_id)
    samples = await _samples(request, task, settings.upload_limits())
    return await asyncio.wrap_future(_server(request).submit(task, samples, top_k, logits))


@router.get("/v1/serving", summary="The task server: resident bases, switches, delta cache and prefetch counts, "
                                   "and per task its requests, latency and energy per inference")
async def serving(request: Request, db: DbDep) -> dict[str, Any]:
    return {**_server(request).stats(), "tasks": records.serving_totals(db)}


def _server(request: Request) -> TaskServer:
    return request.app.state.tasks


async def _samples(request: Request, task: dict[str, Any], limits: UploadLimits) -> Samples:
    kind = task["kind"]
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise InvalidInput(f"the body is not JSON; accepted: {ACCEPTED[kind]}") from None
        return texts_from_json(body, kind)
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        files = [(f.filename or "upload", await f.read()) for f in form.getlist("file") if isinstance(f, UploadFile)]
        return await run_in_threadpool(samples_from_files, files, kind, limits, task.get("features"))
    raise InvalidInput(f"send {ACCEPTED[kind]} (Content-Type {content_type or 'missing'} is not accepted)",
                       detail={"accepted": ACCEPTED[kind]})

"""/v1/jobs: start, list, show and cancel adaptation jobs; their live events and their artifacts."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from edged.api.deps import BlobsDep, DbDep, SettingsDep
from edged.jobs import records
from edged.jobs.schemas import ArtifactPublic, JobCreate, JobPublic
from edged.jobs.sse import job_event_stream
from edged.jobs.validate import checked_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_JOB_CREATE_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": JobCreate.model_json_schema()}}}
}


def _public(row: dict[str, Any]) -> JobPublic:
    return JobPublic(**{**row, "dataset": row["dataset_id"]})


@router.post("", status_code=202, response_model=JobPublic, openapi_extra=_JOB_CREATE_BODY,
             summary="Start an adaptation job (422 lists every problem with the request)")
def create_job(body: Annotated[Any, Body()], request: Request, db: DbDep, settings: SettingsDep) -> JobPublic:
    # The body is validated by `checked_job`, not by FastAPI, so that field errors and registry or
    # dataset errors come back together in one 422.
    job, config = checked_job(db, body, settings)
    job_id = records.create_job(db, job.model, job.dataset, job.method, config)
    created = _public(records.get_job(db, job_id))  # read before the manager may claim it: 202 says queued
    request.app.state.jobs.wake()
    return created


@router.get("", response_model=list[JobPublic], summary="List jobs, newest first")
async def list_jobs(db: DbDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobPublic]:
    return [_public(row) for row in records.list_jobs(db, limit)]


@router.get("/{job_id}", response_model=JobPublic, summary="Show one job: state, stage, progress, metrics")
async def get_job(job_id: str, db: DbDep) -> JobPublic:
    return _public(records.get_job(db, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic, status_code=202,
             summary="Cancel a job: a queued one at once, a running one between training steps (409 if finished)")
def cancel_job(job_id: str, db: DbDep) -> JobPublic:
    return _public(records.request_cancel(db, job_id))


@router.get("/{job_id}/events", summary="Live job events as Server-Sent Events (ends when the job ends)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}})
async def job_events(job_id: str, request: Request, db: DbDep, settings: SettingsDep,
               last_event_id: Annotated[Optional[int], Header(description="resume after this event id")] = None
               ) -> StreamingResponse:
    records.get_job(db, job_id)  # 404 before the stream starts
    return StreamingResponse(job_event_stream(settings.db_path, job_id, request.app.state.stopping,
                                              last_event_id or 0),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/artifacts", response_model=list[ArtifactPublic], summary="Files the job produced")
async def list_artifacts(job_id: str, db: DbDep) -> list[ArtifactPublic]:
    return [ArtifactPublic(**row) for row in records.list_artifacts(db, job_id)]


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}},
            summary="Download an artifact (delta.safetensors, merged.safetensors)")
def get_artifact(job_id: str, name: str, db: DbDep, blobs: BlobsDep) -> FileResponse:
    artifact = records.get_artifact(db, job_id, name)
    path = blobs.path(artifact["blob"])
    return FileResponse(path, media_type=artifact["media_type"], filename=name)

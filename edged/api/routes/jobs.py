"""/v1/jobs: start, list, show, cancel and delete adaptation jobs; their live events and their artifacts."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from edged.api.deps import BlobsDep, DbDep, SettingsDep
from edged.api.errors import error_responses
from edged.jobs import records, retention
from edged.jobs.schemas import ArtifactPublic, JobCreate, JobPublic
from edged.jobs.sse import job_event_stream
from edged.jobs.validate import checked_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_EVENT_ID = 2**63 - 1  # event ids are SQLite integers

_JOB_CREATE_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": JobCreate.model_json_schema()}}}
}


def _public(row: dict[str, Any]) -> JobPublic:
    return JobPublic(**{**row, "dataset": row["dataset_id"]})


@router.post("", status_code=202, response_model=JobPublic, openapi_extra=_JOB_CREATE_BODY,
             responses=error_responses(400, 413), summary="Start an adaptation job (422 lists every problem with the request)")
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


@router.get("/{job_id}", response_model=JobPublic, responses=error_responses(404),
            summary="Show one job: state, stage, progress, metrics")
async def get_job(job_id: str, db: DbDep) -> JobPublic:
    return _public(records.get_job(db, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic, status_code=202, responses=error_responses(404, 409),
             summary="Cancel a job: a queued one at once, a running one between training steps (409 if finished)")
def cancel_job(job_id: str, db: DbDep) -> JobPublic:
    return _public(records.request_cancel(db, job_id))


@router.delete("/{job_id}", status_code=204, responses=error_responses(404, 409),
               summary="Delete a finished job: its row, events, work directory and artifacts "
                       "(409 while queued or running: cancel it first)")
def delete_job(job_id: str, db: DbDep, blobs: BlobsDep, settings: SettingsDep) -> Response:
    retention.delete_job(db, blobs, settings.data_dir, job_id)
    return Response(status_code=204)


@router.get("/{job_id}/events", summary="Live job events as Server-Sent Events (ends when the job ends)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
                       **error_responses(404)})
async def job_events(job_id: str, request: Request, db: DbDep, settings: SettingsDep,
                     last_event_id: Annotated[Optional[int], Header(
                         ge=0, le=MAX_EVENT_ID, description=f"resume after this event id (an integer 0..{MAX_EVENT_ID})")] = None
               ) -> StreamingResponse:
    records.get_job(db, job_id)  # 404 before the stream starts
    return StreamingResponse(job_event_stream(settings.db_path, job_id, request.app.state.stopping,
                                              last_event_id or 0),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/artifacts", response_model=list[ArtifactPublic], responses=error_responses(404),
            summary="Files the job produced")
async def list_artifacts(job_id: str, db: DbDep) -> list[ArtifactPublic]:
    return [ArtifactPublic(**row) for row in records.list_artifacts(db, job_id)]


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"},
                       **error_responses(404, 409)},
            summary="Download an artifact (delta.safetensors, merged.safetensors); 409 `corrupt` if its stored bytes "
                    "no longer match its sha256")
def get_artifact(job_id: str, name: str, db: DbDep, blobs: BlobsDep) -> FileResponse:
    artifact = records.get_artifact(db, job_id, name)
    path = records.verified_artifact_path(blobs, artifact)
    return FileResponse(path, media_type=artifact["media_type"], filename=name)

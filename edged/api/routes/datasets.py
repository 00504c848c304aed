"""/v1/datasets: upload, list, show and delete labelled datasets."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, File, Form, Response, UploadFile

from edged.api.deps import BlobsDep, DbDep, DecodeGateDep, UploadLimitsDep
from edged.api.errors import error_responses
from edged.api.schemas import DatasetPublic
from edged.data.formats import ACCEPTED, LAYOUTS_TEXT
from edged.errors import TooLarge
from edged.jobs import records
from edged.store import datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=DatasetPublic, responses=error_responses(400, 413, 503, 507),
             summary="Upload a labelled dataset (the same bytes again: the existing one, `already_stored`)",
             description=f"The format is chosen by the file name's ending. {LAYOUTS_TEXT}.")
def upload_dataset(
    file: Annotated[UploadFile, File(description=f"the dataset file: {ACCEPTED}")],
    db: DbDep,
    blobs: BlobsDep,
    limits: UploadLimitsDep,
    gate: DecodeGateDep,
    name: Annotated[
        Optional[str], Form(description="a name for the dataset (default: the file name); printable, <= 200 characters")
    ] = None,
) -> DatasetPublic:
    with gate.slot():  # the upload's bytes are read into memory only once its decode may start
        data = file.file.read(int(limits.max_upload_bytes) + 1)
        if len(data) > limits.max_upload_bytes:
            raise TooLarge(f"{file.filename}: over the {limits.max_upload_mb:g} MiB upload limit")
        row = datasets.save_dataset(db, blobs, file.filename or "", data, name=name, limits=limits)
        del data  # freed before the slot's release hands free memory back to the OS
    return DatasetPublic(**row)


@router.get("", response_model=list[DatasetPublic], summary="List datasets, newest first")
async def list_datasets(db: DbDep) -> list[DatasetPublic]:
    return [DatasetPublic(**row) for row in datasets.list_datasets(db)]


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=error_responses(404), summary="Show one dataset")
async def get_dataset(dataset_id: str, db: DbDep) -> DatasetPublic:
    return DatasetPublic(**datasets.get_dataset(db, dataset_id))


@router.delete("/{dataset_id}", status_code=204, responses=error_responses(404, 409),
               summary="Delete a dataset (409 while a job uses it)")
def delete_dataset(dataset_id: str, db: DbDep, blobs: BlobsDep) -> Response:
    records.refuse_if_dataset_in_use(db, dataset_id)
    datasets.delete_dataset(db, blobs, dataset_id)
    return Response(status_code=204)

"""Request dependencies as `Annotated` aliases, so routes read `def f(db: DbDep, ...)`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import sqlite_utils
from fastapi import Depends, Request

from edged.data.decode_budget import DecodeGate
from edged.data.upload_limits import UploadLimits
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import open_db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[sqlite_utils.Database]:
    """A connection per request: sqlite connections must not be shared by concurrent threads."""
    db = open_db(request.app.state.settings.db_path)
    try:
        yield db
    finally:
        db.close()


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


def get_upload_limits(request: Request) -> UploadLimits:
    return request.app.state.settings.upload_limits()


def get_decode_gate(request: Request) -> DecodeGate:
    return request.app.state.decode_gate


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[sqlite_utils.Database, Depends(get_db)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
UploadLimitsDep = Annotated[UploadLimits, Depends(get_upload_limits)]
DecodeGateDep = Annotated[DecodeGate, Depends(get_decode_gate)]

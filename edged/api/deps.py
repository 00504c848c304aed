"""Request dependencies as `Annotated` aliases, so routes read `def f(db: DbDep, ...)`.

They are `async def` although they do not await: FastAPI runs a sync dependency in its threadpool, and
a thread hand-off per dependency costs more than the dependency itself under concurrent clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import sqlite_utils
from fastapi import Depends, Request

from edged.data.decode_budget import DecodeGate
from edged.data.upload_limits import UploadLimits
from edged.settings import Settings
from edged.store.blobs import BlobStore


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> AsyncIterator[sqlite_utils.Database]:
    """A connection of the app's pool for this request only (async: taken and given back on the event
    loop, with no thread hand-off; sqlite connections must not be shared by concurrent requests)."""
    pool = request.app.state.db_pool
    db = pool.acquire()
    try:
        yield db
    finally:
        pool.release(db)


async def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


async def get_upload_limits(request: Request) -> UploadLimits:
    return request.app.state.settings.upload_limits()


def get_decode_gate(request: Request) -> DecodeGate:
    return request.app.state.decode_gate


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[sqlite_utils.Database, Depends(get_db)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
UploadLimitsDep = Annotated[UploadLimits, Depends(get_upload_limits)]
DecodeGateDep = Annotated[DecodeGate, Depends(get_decode_gate)]

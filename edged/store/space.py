"""A full data directory, recognised wherever it surfaces and reported as one InsufficientStorage (507).

Running out of space shows up in many shapes: an OSError with ENOSPC or EDQUOT from our own writes,
SQLite's SQLITE_FULL ("database or disk is full"), or a library's own exception that only carries the
OS message (safetensors, torch's zip writer). All of them mean the same thing to an operator.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Optional

from edged.errors import InsufficientStorage

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("database or disk is full", *(os.strerror(code) for code in DISK_FULL_ERRNOS))


def is_disk_full(exc: Optional[BaseException]) -> bool:
    """Whether `exc`, or an exception it was raised from, means the file system is out of space."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, InsufficientStorage) or any(text in str(exc) for text in _DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full(data_dir: Path) -> InsufficientStorage:
    """The error for a full data directory: how much is free, and what frees space."""
    free = free_bytes(data_dir)
    free_text = "unknown" if free is None else f"{free / 2**20:.1f} MiB"
    return InsufficientStorage(
        f"the data directory is full (ENOSPC: {free_text} free on the file system of {data_dir}); "
        "free space there (DELETE /v1/jobs/{id} for finished jobs, DELETE /v1/datasets/{id}, a lower "
        "EDGED_JOB_RETENTION_DAYS) or move EDGED_DATA_DIR to a larger disk, then try again",
        detail={"data_dir": str(data_dir), "free_bytes": free},
    )

"""Deleting finished jobs: one at a time (DELETE /v1/jobs/{id}), or every job that ended more than
EDGED_JOB_RETENTION_DAYS ago (at start-up and then hourly, between jobs, by the job manager).

A job's row goes first, in one transaction with its events, stage telemetry and artifact rows; then
its work directory and the artifact blobs no other row references. A crash in between leaves files
without a row, never a row without its files; the sweep removes work directories left that way.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import sqlite_utils

from edged.errors import Conflict, NotFound
from edged.jobs import records
from edged.jobs.worker import job_dir
from edged.store.blobs import BlobStore
from edged.store.db import utc_now

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 3600.0
SECONDS_PER_DAY = 86_400


def delete_job(db: sqlite_utils.Database, blobs: BlobStore, data_dir: Path, job_id: str) -> None:
    """Delete a finished job and everything it left; NotFound if unknown, Conflict while queued/running."""
    unreferenced = records.delete_finished_job(db, job_id)
    shutil.rmtree(job_dir(data_dir, job_id), ignore_errors=True)
    for digest in unreferenced:
        blobs.delete(digest)


def delete_expired_jobs(db: sqlite_utils.Database, blobs: BlobStore, data_dir: Path, retention_days: float) -> list[str]:
    """Delete the jobs that finished more than `retention_days` ago (0: keep every job); returns their ids."""
    if retention_days <= 0:
        return []
    expired = records.finished_before(db, utc_now(seconds_ago=retention_days * SECONDS_PER_DAY))
    deleted = []
    for job_id in expired:
        try:
            delete_job(db, blobs, data_dir, job_id)
        except (NotFound, Conflict):  # deleted meanwhile through the API
            continue
        deleted.append(job_id)
    _remove_orphaned_job_dirs(db, data_dir)
    if deleted:
        log.info("deleted %d job(s) that ended more than %g day(s) ago", len(deleted), retention_days)
    return deleted


def _remove_orphaned_job_dirs(db: sqlite_utils.Database, data_dir: Path) -> None:
    """Work directories whose job row is gone (a crash between a delete's two steps)."""
    jobs_root = data_dir / "jobs"
    if not jobs_root.is_dir():
        return
    known = records.job_ids(db)
    for directory in jobs_root.iterdir():
        if directory.is_dir() and directory.name not in known:
            shutil.rmtree(directory, ignore_errors=True)

"""Start-up recovery and the queue's state changes, on a real migrated database (no worker runs)."""

from __future__ import annotations

import pytest

from jobs_helpers import FAST_JOB, digits_npz
from edged.errors import Conflict
from edged.jobs import records
from edged.jobs.manager import MAX_RESUMES, recover_jobs
from edged.jobs.states import JobState
from edged.jobs.validate import checked_job
from edged.store.datasets import get_dataset, save_dataset


def _running_job(db, blobs, settings, with_work_dir: bool = True) -> str:
    dataset = save_dataset(db, blobs, "digits.npz", digits_npz(60))
    job, config = checked_job(db, {**FAST_JOB, "dataset": dataset["id"]}, settings)
    job_id = records.create_job(db, job.model, job.dataset, job.method, config)
    assert records.claim_next(db)["id"] == job_id
    records.set_worker_pid(db, job_id, 2**22 + 1)  # beyond pid_max: no such process
    if with_work_dir:
        (settings.data_dir / "jobs" / job_id).mkdir(parents=True)
    return job_id


def test_a_lost_worker_is_resumed_twice_then_the_job_is_interrupted(db, blobs, settings):
    job_id = _running_job(db, blobs, settings)
    for attempt in range(1, MAX_RESUMES + 1):
        recover_jobs(db, settings)
        job = records.get_job(db, job_id)
        assert job["state"] == "queued" and job["worker_pid"] is None
        assert records.count_events(db, job_id, "resumed") == attempt
        assert records.claim_next(db)["id"] == job_id  # the manager would start a worker here; it is lost again
    recover_jobs(db, settings)
    job = records.get_job(db, job_id)
    assert job["state"] == "interrupted" and "lost 3 times" in job["error"] and job["finished_at"]


def test_a_job_whose_dataset_or_work_dir_is_gone_is_interrupted_with_why(db, blobs, settings):
    no_dir = _running_job(db, blobs, settings, with_work_dir=False)
    recover_jobs(db, settings)
    assert "work directory" in records.get_job(db, no_dir)["error"]
    no_blob = _running_job(db, blobs, settings)
    blobs.delete(get_dataset(db, records.get_job(db, no_blob)["dataset_id"])["blob"])
    recover_jobs(db, settings)
    job = records.get_job(db, no_blob)
    assert job["state"] == "interrupted" and "missing from the store" in job["error"]


def test_cancel_takes_a_queued_job_out_at_once_and_flags_a_running_one(db, blobs, settings):
    running = _running_job(db, blobs, settings)
    dataset_id = records.get_job(db, running)["dataset_id"]
    job, config = checked_job(db, {**FAST_JOB, "dataset": dataset_id}, settings)
    queued = records.create_job(db, job.model, job.dataset, job.method, config)
    assert records.request_cancel(db, queued)["state"] == "cancelled"
    assert records.claim_next(db) is None  # a cancelled job is never started
    flagged = records.request_cancel(db, running)
    assert flagged["state"] == "running" and flagged["cancel_requested"] and records.cancel_requested(db, running)
    assert records.finish_running(db, running, JobState.CANCELLED, error="cancelled during stage train")
    with pytest.raises(Conflict, match="already cancelled"):
        records.request_cancel(db, running)

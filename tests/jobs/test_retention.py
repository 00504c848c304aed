"""Deleting jobs: one by DELETE /v1/jobs/{id} (after a real worker ran it), or by EDGED_JOB_RETENTION_DAYS
at start-up. Rows, events, stage telemetry, work directories and unshared artifact blobs go; datasets and
blobs another row still references stay. Real app, real SQLite file."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from jobs_helpers import FAST_JOB, digits_npz, upload, wait_for

from edged.api.app import create_app
from edged.errors import Conflict
from edged.jobs import records
from edged.jobs.retention import SECONDS_PER_DAY, delete_expired_jobs, delete_job
from edged.jobs.states import FINAL_STATES, JobState
from edged.jobs.validate import checked_job
from edged.store.datasets import save_dataset
from edged.store.db import utc_now


def _count(db, table: str, job_id: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table} WHERE job_id = ?", [job_id]).fetchone()[0])


def test_delete_a_job_over_http(client, auth, db, blobs, settings):
    dataset = upload(client, auth, count=300)
    # unpublished: nothing but the job names its artifacts (a published task keeps its delta: the next test)
    done = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset, "publish": False}).json()["id"]
    job = wait_for(lambda: client.get(f"/v1/jobs/{done}", headers=auth).json(),
                   lambda j: j["state"] in FINAL_STATES, timeout_s=120)
    assert job["state"] == "succeeded", job
    assert "task_id" not in job["metrics"] and client.get("/v1/tasks", headers=auth).json() == []
    artifacts = client.get(f"/v1/jobs/{done}/artifacts", headers=auth).json()
    work_dir = settings.data_dir / "jobs" / done
    assert artifacts and work_dir.is_dir() and _count(db, "job_stage_telemetry", done) > 0

    running = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset, "epochs": 200}).json()["id"]
    wait_for(lambda: client.get(f"/v1/jobs/{running}", headers=auth).json(), lambda j: j["state"] == "running")
    refused = client.delete(f"/v1/jobs/{running}", headers=auth)
    assert refused.status_code == 409 and "cancel it first" in refused.json()["error"]["message"]
    client.post(f"/v1/jobs/{running}/cancel", headers=auth)

    assert client.delete(f"/v1/jobs/{done}", headers=auth).status_code == 204
    assert client.get(f"/v1/jobs/{done}", headers=auth).status_code == 404
    assert client.delete(f"/v1/jobs/{done}", headers=auth).status_code == 404
    for table in ("job_events", "job_stage_telemetry", "artifacts"):
        assert _count(db, table, done) == 0, table
    assert not work_dir.exists() and not any(blobs.exists(a["sha256"]) for a in artifacts)
    assert client.get(f"/v1/datasets/{dataset}", headers=auth).status_code == 200  # the dataset stays
    wait_for(lambda: client.get(f"/v1/jobs/{running}", headers=auth).json(), lambda j: j["state"] == "cancelled")
    assert client.delete(f"/v1/jobs/{running}", headers=auth).status_code == 204


def test_a_published_task_outlives_its_job_and_its_delta_goes_with_the_task(client, auth, blobs):
    dataset = upload(client, auth, count=300)
    done = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset}).json()["id"]
    job = wait_for(lambda: client.get(f"/v1/jobs/{done}", headers=auth).json(),
                   lambda j: j["state"] in FINAL_STATES, timeout_s=120)
    assert job["state"] == "succeeded", job
    artifacts = {a["name"]: a["sha256"] for a in client.get(f"/v1/jobs/{done}/artifacts", headers=auth).json()}
    task = client.get(f"/v1/tasks/{job['metrics']['task_id']}", headers=auth).json()
    assert task["delta_blob"] == artifacts["delta.safetensors"]
    assert client.delete(f"/v1/jobs/{done}", headers=auth).status_code == 204
    kept = client.get(f"/v1/tasks/{task['id']}", headers=auth).json()
    assert kept["job_id"] is None and blobs.exists(task["delta_blob"])  # the task still predicts from it
    assert not blobs.exists(artifacts["merged.safetensors"])
    assert client.delete(f"/v1/tasks/{task['id']}", headers=auth).status_code == 204
    assert not blobs.exists(task["delta_blob"])



def _finished_job(db, blobs, settings, artifact_bytes: bytes) -> str:
    dataset = save_dataset(db, blobs, "digits.npz", digits_npz(60))
    job, config = checked_job(db, {**FAST_JOB, "dataset": dataset["id"]}, settings)
    job_id = records.create_job(db, job.model, job.dataset, job.method, config)
    assert records.claim_next(db)["id"] == job_id
    (settings.data_dir / "jobs" / job_id).mkdir(parents=True)
    output = settings.data_dir / "jobs" / job_id / "delta.safetensors"
    output.write_bytes(artifact_bytes)
    records.add_artifact(db, blobs, job_id, "delta.safetensors", output)
    assert records.finish_running(db, job_id, JobState.SUCCEEDED, metrics={})
    return job_id


def test_an_artifact_blob_shared_by_two_jobs_goes_with_the_last(db, blobs, settings):
    first, second = (_finished_job(db, blobs, settings, b"the same delta") for _ in range(2))
    digest = records.list_artifacts(db, first)[0]["blob"]
    assert records.list_artifacts(db, second)[0]["blob"] == digest
    delete_job(db, blobs, settings.data_dir, first)
    assert blobs.is_intact(digest)  # still the second job's
    delete_job(db, blobs, settings.data_dir, second)
    assert not blobs.exists(digest)


def test_queued_jobs_are_not_deleted(db, blobs, settings):
    dataset = save_dataset(db, blobs, "digits.npz", digits_npz(60))
    job, config = checked_job(db, {**FAST_JOB, "dataset": dataset["id"]}, settings)
    job_id = records.create_job(db, job.model, job.dataset, job.method, config)
    with pytest.raises(Conflict, match="is queued; cancel it first"):
        delete_job(db, blobs, settings.data_dir, job_id)


def test_retention_deletes_jobs_that_ended_long_enough_ago_at_start_up(db, blobs, settings):
    old, recent = (_finished_job(db, blobs, settings, content) for content in (b"old delta", b"recent delta"))
    db.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", [utc_now(seconds_ago=31 * SECONDS_PER_DAY), old])
    assert delete_expired_jobs(db, blobs, settings.data_dir, retention_days=0) == []  # 0 keeps every job
    orphan = settings.data_dir / "jobs" / ("0" * 32)
    orphan.mkdir()  # a work directory whose row is gone (a crash mid-delete)
    assert settings.job_retention_days == 0  # the default deletes nothing
    with TestClient(create_app(settings.model_copy(update={"job_retention_days": 30}))):  # swept at start-up
        pass
    assert [job["id"] for job in records.list_jobs(db)] == [recent]
    assert not (settings.data_dir / "jobs" / old).exists() and not orphan.exists()
    assert (settings.data_dir / "jobs" / recent).is_dir()

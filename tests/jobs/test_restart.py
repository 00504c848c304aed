"""The daemon stopped (gracefully, or killed outright) with a job running, then started again: the job
resumes from its work directory, and its dataset is intact. `edged serve` runs as a real process."""

from __future__ import annotations

import signal

import httpx
import pytest

from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for
from edged.jobs.states import FINAL_STATES


def _state_in_db(daemon: Daemon, job_id: str) -> str:
    from edged.store.db import open_db

    db = open_db(daemon.data_dir / "edged.db")
    try:
        return db.execute("SELECT state FROM jobs WHERE id = ?", [job_id]).fetchone()[0]
    finally:
        db.close()


def _last_event_id(daemon: Daemon, job_id: str) -> int:
    from edged.store.db import open_db

    db = open_db(daemon.data_dir / "edged.db")
    try:
        return int(db.execute("SELECT coalesce(max(id), 0) FROM job_events WHERE job_id = ?", [job_id]).fetchone()[0])
    finally:
        db.close()


def test_stopped_or_killed_daemon_resumes_the_running_job_on_the_next_start(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(1000))}).json()
        response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH,
                              json={**FAST_JOB, "dataset": dataset["id"], "epochs": 12})  # long enough to outlast a stop
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        daemon.next_event(job_id, "epoch")  # epoch 0 finished and checkpointed

        # 1. a graceful stop (SIGTERM, as systemd sends) stops the worker and leaves the job queued
        assert "Application shutdown complete" in daemon.stop(signal.SIGTERM)
        assert _state_in_db(daemon, job_id) == "queued"
        assert (daemon.data_dir / "jobs" / job_id / "mask.safetensors").is_file()
        daemon.start()
        # the stopped worker may have announced one more epoch on its way out: wait for the new worker's
        # claim, then for an epoch event after everything written so far
        wait_for(daemon.job(job_id), lambda j: j["state"] == "running")
        second = daemon.next_event(job_id, "epoch", after=_last_event_id(daemon, job_id))
        assert second["epoch"] >= 1  # resumed after the checkpointed epoch, not from scratch

        # 2. killed outright (as by a power cut): the job is found running and requeued at start-up
        daemon.stop(signal.SIGKILL)
        assert _state_in_db(daemon, job_id) == "running"
        daemon.start()
        job = wait_for(daemon.job(job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=60)
        assert job["state"] == "succeeded", job
        _check_events(daemon.events(job_id))
        assert daemon.get(f"/v1/datasets/{dataset['id']}").json()["sha256"] == dataset["sha256"]
    finally:
        daemon.stop(signal.SIGTERM)


def _check_events(events: list[tuple[str, dict]]) -> None:
    runs = [i for i, (kind, e) in enumerate(events)
            if kind == "stage" and e["stage"] == "validate" and e["status"] == "started"]
    assert len(runs) == 3  # the first run and two resumed ones
    for start in runs[1:]:
        stages = [e["stage"] for kind, e in events[start:] if kind == "stage"]
        assert "score" not in stages and "calibrate" in stages  # calibration and mask came from disk
    reasons = [e.get("reason") or "" for kind, e in events if kind in ("state", "resumed")]
    assert any("daemon stopped during stage train" in r for r in reasons)
    resumed = [e for kind, e in events if kind == "resumed"]
    assert len(resumed) == 1 and "resume 1 of 2" in resumed[0]["reason"]


# --- kill -9 after the first epoch: the resumed job ends as an uninterrupted one --------------------------

# Epochs take ~0.2 s here: enough of them that training outlasts the kill's latency (SSE, then SIGKILL).
RESUME_JOB = {**FAST_JOB, "epochs": 10, "seed": 7}


def _rows(daemon: Daemon, sql: str, args: list) -> list[tuple]:
    from edged.store.db import open_db

    db = open_db(daemon.data_dir / "edged.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _finished_rows(daemon: Daemon, job_id: str) -> tuple[list[tuple], list[tuple]]:
    return (_rows(daemon, "SELECT * FROM jobs WHERE id = ?", [job_id]),
            _rows(daemon, "SELECT * FROM artifacts WHERE job_id = ? ORDER BY name", [job_id]))


def _submit(daemon: Daemon, job: dict) -> str:
    response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=job, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _finish(daemon: Daemon, job_id: str) -> dict:
    return wait_for(daemon.job(job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=120)


def _artifact_tensors(daemon: Daemon, job_id: str, name: str) -> dict:
    """The tensors of a safetensors artifact (not its bytes: safetensors writes its metadata in hash order)."""
    from safetensors.torch import load

    return load(daemon.get(f"/v1/jobs/{job_id}/artifacts/{name}").content)


def _same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _killed_after_first_epoch(daemon: Daemon, job: dict) -> str:
    """Submit `job`, SIGKILL the daemon once its first epoch is announced; returns the job id."""
    job_id = _submit(daemon, job)
    daemon.next_event(job_id, "epoch")  # epoch 0 is finished and checkpointed before it is announced
    daemon.stop(signal.SIGKILL)
    assert _state_in_db(daemon, job_id) == "running"
    return job_id


def _blob_sha256(daemon: Daemon, digest: str) -> str:
    import hashlib

    from edged.store.blobs import BlobStore

    return hashlib.sha256(BlobStore(daemon.data_dir / "blobs").path(digest).read_bytes()).hexdigest()


# same_shape_mlp: 6 x Linear(192, 192); a budget of 2 entries per row gives every layer's sparse delta the
# same shape (384,) too, so values restored into the wrong layers would load without any error.
SAME_SHAPE = {"model": "edged_jobs_test_model:same_shape_mlp", "budget": 2 * 6 * 192 / (6 * 192 * 192) + 1e-7}


@pytest.mark.parametrize("model", [{}, SAME_SHAPE], ids=["small_cnn", "same_shape_mlp"])
def test_a_job_killed_after_epoch_1_resumes_to_the_result_of_an_uninterrupted_run(tmp_path, model):
    """The resumed job's weights must equal the uninterrupted run's bit for bit (so its accuracy too)."""
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(1000))}).json()
        job = {**RESUME_JOB, **model, "dataset": dataset["id"]}
        reference = _finish(daemon, _submit(daemon, job))  # the same job, uninterrupted
        assert reference["state"] == "succeeded", reference
        finished_before = _finished_rows(daemon, reference["id"])
        dataset_row = _rows(daemon, "SELECT * FROM datasets WHERE id = ?", [dataset["id"]])

        job_id = _killed_after_first_epoch(daemon, job)
        daemon.start()
        resumed = _finish(daemon, job_id)
        assert resumed["state"] == "succeeded", resumed
        events = daemon.events(job_id)
        assert [kind for kind, _ in events].count("resumed") == 1
        resumed_epochs = [e["epoch"] for kind, e in events[_last_run(events):] if kind == "epoch"]
        assert resumed_epochs and min(resumed_epochs) >= 1  # it trained on, after a finished epoch

        ours, theirs = resumed["metrics"], reference["metrics"]
        assert abs(ours["accuracy_after"] - theirs["accuracy_after"]) <= 0.005
        assert ours["epochs_run"] == theirs["epochs_run"] == max(resumed_epochs) + 1  # all epochs, both runs
        for name in ("merged.safetensors", "delta.safetensors"):  # the same weights, bit for bit
            assert _same_tensors(_artifact_tensors(daemon, job_id, name), _artifact_tensors(daemon, reference["id"], name))
        assert _finished_rows(daemon, reference["id"]) == finished_before
        assert _rows(daemon, "SELECT * FROM datasets WHERE id = ?", [dataset["id"]]) == dataset_row
        assert _blob_sha256(daemon, dataset["sha256"]) == dataset["sha256"]
    finally:
        daemon.stop(signal.SIGTERM)


def _last_run(events: list[tuple[str, dict]]) -> int:
    """Index of the last run's first event (its validate stage starting)."""
    return max(i for i, (kind, e) in enumerate(events)
               if kind == "stage" and e["stage"] == "validate" and e["status"] == "started")


def test_torn_stage_files_are_detected_on_resume_and_their_stages_redone(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(1000))}).json()
        job_id = _killed_after_first_epoch(daemon, {**RESUME_JOB, "dataset": dataset["id"]})
        work = daemon.data_dir / "jobs" / job_id
        for name in ("mask.safetensors", "checkpoint/last.safetensors"):  # as a power cut could leave them
            data = (work / name).read_bytes()
            (work / name).write_bytes(data[: len(data) // 2])
        daemon.start()
        job = _finish(daemon, job_id)
        assert job["state"] == "succeeded", job
        events = daemon.events(job_id)[_last_run(daemon.events(job_id)):]
        stages = [e["stage"] for kind, e in events if kind == "stage" and e["status"] == "started"]
        assert "score" in stages and "mask" in stages  # the torn mask was chosen again
        assert next(e["epoch"] for kind, e in events if kind == "epoch") == 0  # training started over
        assert job["metrics"]["epochs_run"] == max(e["epoch"] for kind, e in events if kind == "epoch") + 1
    finally:
        daemon.stop(signal.SIGTERM)


def test_a_cancel_that_meets_a_shutdown_ends_cancelled(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(1000))}).json()
        job_id = _submit(daemon, {**FAST_JOB, "dataset": dataset["id"], "epochs": 50})
        daemon.next_event(job_id, "epoch")
        assert httpx.post(f"{daemon.url}/v1/jobs/{job_id}/cancel", headers=AUTH).status_code == 202
        daemon.stop(signal.SIGTERM)  # at once: the worker sees the stop before it polls for the cancel
        assert _state_in_db(daemon, job_id) == "cancelled"
        daemon.start()
        job = daemon.job(job_id)()
        assert job["state"] == "cancelled" and "cancel" in job["error"], job
    finally:
        daemon.stop(signal.SIGTERM)

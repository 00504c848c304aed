"""A held-out test set given as a second dataset (`test_dataset`), through a real daemon: the job reports
accuracy on it, its labels are matched to the training classes by name, and a test set that does not fit is
a 422 naming what would be accepted; a dataset some job holds out cannot be deleted under it."""

from __future__ import annotations

import io

import numpy as np
import torch

from edged.data.bundled import mnist_5k
from edged.data.task import TaskData
from edged.train.evaluate import accuracy
import httpx

from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for
from tasks_helpers import merged_model


def _digits(labels: list[int], count: int, seed: int) -> bytes:
    """`count` real MNIST digits of the given labels only, as an npz upload."""
    task = mnist_5k()
    keep = np.flatnonzero(np.isin(task.y.numpy(), labels))
    index = np.random.default_rng(seed).permutation(keep)[:count]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=task.x.numpy()[index, 0], y=task.y.numpy()[index])
    return buffer.getvalue()


def _upload(daemon: Daemon, name: str, data: bytes) -> dict:
    response = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, files={"file": (name, data)}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def _submit(daemon: Daemon, job: dict) -> httpx.Response:
    return httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=job, timeout=30)


def test_a_job_reports_accuracy_on_its_held_out_set(daemon: Daemon) -> None:
    """The test set holds two of the ten classes (labels 3 and 7, stored as classes ['3', '7'], y in {0, 1}):
    the job must score it in the training dataset's class order, the accuracy the merged model gets on it."""
    train_id = _upload(daemon, "digits.npz", digits_npz(300))["id"]
    test = _upload(daemon, "held_out.npz", _digits([3, 7], 40, seed=5))
    assert test["classes"] == ["3", "7"]
    response = _submit(daemon, {**FAST_JOB, "dataset": train_id, "test_dataset": test["id"]})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    # while the job is queued or running, its held-out set cannot be deleted under it
    deleted = httpx.delete(f"{daemon.url}/v1/datasets/{test['id']}", headers=AUTH, timeout=30)
    job = daemon.job(job_id)()
    if job["state"] in ("queued", "running"):
        assert deleted.status_code == 409, deleted.text
    job = wait_for(daemon.job(job_id), lambda j: j["state"] not in ("queued", "running"), timeout_s=180)
    assert job["state"] == "succeeded", job["error"]
    metrics = job["metrics"]
    assert metrics["test_samples"] == 40 and job["config"]["test_dataset"] == test["id"]

    loaded = merged_model(daemon, job)
    held_out = mnist_5k()
    keep = np.flatnonzero(np.isin(held_out.y.numpy(), [3, 7]))
    index = torch.from_numpy(np.random.default_rng(5).permutation(keep)[:40])
    digits = TaskData("image", held_out.x[index], held_out.y[index], held_out.classes)
    expected = accuracy(loaded.model, loaded.preprocess(digits), digits.y, 64, torch.device("cpu"), None)
    assert metrics["test_accuracy_after"] == expected
    assert 0.0 <= metrics["test_accuracy_before"] <= 1.0


def test_a_test_set_that_does_not_fit_is_refused_with_what_fits(daemon: Daemon) -> None:
    low = _upload(daemon, "low.npz", _digits([0, 1, 2, 3, 4], 100, seed=1))
    high = _upload(daemon, "high.npz", _digits([4, 5, 6], 60, seed=2))
    news = _upload(daemon, "news.jsonl",
                   b'{"text": "markets rose", "label": "business"}\n{"text": "a late goal", "label": "sport"}\n')
    cases = {
        "high classes": (high["id"], "class_mismatch", "'5', '6'"),
        "itself": (low["id"], "not_held_out", "training dataset itself"),
        "text": (news["id"], "kind_mismatch", "accepted: a dataset of image data"),
        "missing": ("nope", "not_found", "no dataset with id 'nope'"),
    }
    for case, (test_id, type_, words) in cases.items():
        response = _submit(daemon, {**FAST_JOB, "dataset": low["id"], "test_dataset": test_id})
        assert response.status_code == 422, (case, response.text)
        reasons = [r for r in response.json()["error"]["detail"] if r["loc"] == ["body", "test_dataset"]]
        assert [r["type"] for r in reasons] == [type_], (case, reasons)
        assert words in reasons[0]["msg"], (case, reasons[0]["msg"])

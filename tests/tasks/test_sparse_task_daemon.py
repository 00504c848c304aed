"""A 2:4 job with its dense reference, through a real `edged serve`: its delta (format 2: keep-masks in bits) is
smaller than its merged model, the task it publishes predicts exactly like that merged model, and its progress
moves through both trainings: the dense reference's span, then the recovery's, never going back."""

from __future__ import annotations

import json

import pytest
import torch

from daemon import Daemon
from jobs_helpers import FAST_JOB
from tasks_helpers import artifact, merged_model, mnist_sample, predict, run_job, single_thread_logits
from edged.data.bundled import mnist_5k
from edged.data.task import TaskData

PREDICT_IMAGES = 8


@pytest.fixture(scope="module")
def job_2_4(tmp_path_factory):
    """One 2:4 job (digits, 1 epoch, 16 px, dense reference on), its events and its two artifacts."""
    daemon = Daemon(tmp_path_factory.mktemp("sparse-task"))
    daemon.start()
    try:
        job = run_job(daemon, "digits", *mnist_sample(300, seed=2), {**FAST_JOB, "sparsity": "2:4"})
        events = daemon.events(job["id"])
        outputs = {name: artifact(daemon, job, name) for name in ("delta.safetensors", "merged.safetensors")}
        yield daemon, job, events, outputs, mnist_5k().x.numpy()[5000 - PREDICT_IMAGES:, 0]  # digits it did not see
    finally:
        daemon.stop()


def test_the_delta_is_smaller_than_the_merged_model_and_stores_the_pattern_in_bits(job_2_4):
    _, job, _, outputs, _ = job_2_4
    delta, merged = outputs["delta.safetensors"], outputs["merged.safetensors"]
    assert len(delta) < len(merged) / 2, (len(delta), len(merged))
    header = json.loads(delta[8:8 + int.from_bytes(delta[:8], "little")])
    assert header["__metadata__"]["delta_format"] == "2"
    patterns = {key.rpartition("::")[0] for key, entry in header.items() if key.endswith("::pattern")}
    assert patterns == set(job["metrics"]["sparsity"]["pruned_layers"])
    assert all(header[f"{name}::pattern"]["dtype"] == "U8" for name in patterns)


def test_the_published_task_predicts_exactly_like_the_merged_model(job_2_4):
    daemon, job, _, _, x = job_2_4
    response = predict(daemon, job["metrics"]["task_id"], x, logits="true")
    assert response.status_code == 200, response.text
    loaded = merged_model(daemon, job)
    inputs = loaded.preprocess(TaskData("image", torch.from_numpy(x)[:, None], torch.zeros(len(x), dtype=torch.int64),
                                        [str(i) for i in range(10)], labelled=False))
    assert torch.equal(torch.tensor(response.json()["logits"]), single_thread_logits(loaded.model, inputs))


def test_progress_fills_the_dense_reference_span_then_the_recovery_and_never_goes_back(job_2_4):
    _, job, events, _, _ = job_2_4
    plan = next(data["stages"] for kind, data in events if kind == "plan")
    reference, train = plan["dense_reference"], plan["train"]
    assert reference[1] <= train[0] and reference[1] - reference[0] > 0.3  # each training has its own span
    progress = [(kind, data["progress"]) for kind, data in events if "progress" in data]
    values = [value for _, value in progress]
    assert values == sorted(values) and job["progress"] == 1.0
    inside = [value for kind, value in progress if kind == "dense_reference_step"]
    assert inside and all(reference[0] < value <= reference[1] for value in inside)  # moving during the reference
    steps = [value for kind, value in progress if kind == "step"]
    assert steps and all(train[0] < value <= train[1] for value in steps)
    calibrate = plan["calibrate"]  # the calibration pass reports its samples: its last event ends its span
    assert any(value == pytest.approx(calibrate[1]) for kind, value in progress if kind == "progress")

"""Through a real `edged serve`: a head-only job fits its head on cached backbone features and publishes a
task that predicts what its merged model predicts; a full fine-tuning job on a BatchNorm network with
momentum 0.01 re-estimates the running statistics on the task data and says so in its metrics."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from daemon import AUTH, Daemon
from jobs_helpers import MODEL, digits_npz, wait_for
from tasks_helpers import merged_model, predict, single_thread_logits
from edged.data.bundled import mnist_5k
from edged.data.task import TaskData
from edged.jobs.states import FINAL_STATES

SAMPLES = 200
SLOW_BN_MODEL = "edged_jobs_test_model:slow_bn_cnn"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("head_bn"))
    daemon.start()
    try:
        upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=60,
                            files={"file": ("digits.npz", digits_npz(SAMPLES))})
        assert upload.status_code == 201, upload.text
        yield daemon, upload.json()["id"]
    finally:
        daemon.stop()


def _run(daemon: Daemon, job: dict) -> dict:
    response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=job, timeout=30)
    assert response.status_code == 202, response.text
    done = wait_for(daemon.job(response.json()["id"]), lambda j: j["state"] in FINAL_STATES, timeout_s=240)
    assert done["state"] == "succeeded", done["error"]
    return done


def _images(count: int) -> np.ndarray:
    return mnist_5k().x.numpy()[-count:, 0]  # (count, 28, 28) uint8


def test_a_head_only_job_fits_on_cached_features_and_its_task_predicts_like_its_merged_model(served):
    daemon, dataset = served
    job = _run(daemon, {"model": MODEL, "dataset": dataset, "method": "head", "epochs": 1, "image_size": 16})
    metrics = job["metrics"]
    assert metrics["trainable_params"] == 0 and metrics["batchnorm_reestimated"] is None  # no backbone change
    assert metrics["accuracy_after"] > metrics["accuracy_before"]
    epoch = daemon.next_event(job["id"], "epoch")
    assert epoch["cached_features"] is True and epoch["weight_decay"] > 0
    assert epoch["val_accuracy"] == pytest.approx(metrics["accuracy_after"])  # the cached path scores the model
    loaded = merged_model(daemon, job)
    x = _images(8)
    inputs = loaded.preprocess(TaskData("image", torch.from_numpy(x)[:, None], torch.zeros(len(x), dtype=torch.int64),
                                        [str(i) for i in range(10)], labelled=False))
    response = predict(daemon, metrics["task_id"], x, logits="true")
    assert response.status_code == 200, response.text
    assert torch.equal(torch.tensor(response.json()["logits"]), single_thread_logits(loaded.model, inputs))


def test_full_fine_tuning_of_a_slow_batchnorm_network_re_estimates_its_statistics_on_the_task_data(served):
    daemon, dataset = served
    job = _run(daemon, {"model": SLOW_BN_MODEL, "dataset": dataset, "method": "full", "epochs": 1, "lr": 0.01,
                        "image_size": 16})
    report = job["metrics"]["batchnorm_reestimated"]
    assert report["kept"] and report["layers"] == 2
    assert report["samples"] == job["metrics"]["train_samples"]  # all of them: fewer than calibration_samples
    assert report["train_accuracy_reestimated"] >= report["train_accuracy_stale"]
    # The first BatchNorm's running mean is now its input's mean over the task data (the merged conv's outputs),
    # where momentum 0.01 over 5 steps would have left it ~95 % at its initial zeros.
    loaded = merged_model(daemon, job)
    model = loaded.model
    digits = mnist_5k().x.numpy()[np.random.default_rng(0).permutation(5000)[:SAMPLES], 0]  # digits_npz's draw
    inputs = loaded.preprocess(TaskData("image", torch.from_numpy(digits)[:, None],
                                        torch.zeros(SAMPLES, dtype=torch.int64), [str(i) for i in range(10)],
                                        labelled=False))
    with torch.no_grad():
        data_mean = model.backbone[0](inputs).mean(dim=(0, 2, 3))  # (16,) per channel, all uploaded samples
    running_mean = model.backbone[1].running_mean
    assert float((running_mean - data_mean).norm()) < 0.1 * float(data_mean.norm())

"""A task whose job compiled it with onnxruntime, served by a real `edged serve`: its predictions come from the
job's ONNX artifact (exactly what onnxruntime gives on that file), agree with the merged model within fp32
tolerance, micro-batch under concurrent clients, and a deleted or damaged artifact answers a clear error while
the other tasks keep answering."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for
from tasks_helpers import artifact, merged_model, npz, predict
from edged.compile.onnx_export import OnnxRunner
from edged.data.bundled import mnist_5k
from edged.data.task import TaskData
from edged.store.blobs import BlobStore
from edged.store.db import open_db
from edged.tasks.compiled import runtime_probe

CONCURRENT = 24


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A daemon (50 ms micro-batch wait) with two tasks: the digits compiled with onnxruntime, and parity (eager)."""
    daemon = Daemon(tmp_path_factory.mktemp("compiled"), settings={"EDGED_PREDICT_MAX_WAIT_MS": "50"})
    daemon.start()
    jobs = {}
    try:
        for name, extra in (("onnx", {"compile": "onnxruntime"}), ("eager", {})):
            data = digits_npz(300) if name == "onnx" else _parity_npz()
            upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=60,
                                files={"file": (f"{name}.npz", data)})
            assert upload.status_code == 201, upload.text
            job = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=60,
                             json={**FAST_JOB, **extra, "dataset": upload.json()["id"]})
            assert job.status_code == 202, job.text
            jobs[name] = job.json()["id"]
        done = {name: wait_for(daemon.job(job_id), lambda j: j["state"] in ("succeeded", "failed"), timeout_s=240)
                for name, job_id in jobs.items()}
        assert all(j["state"] == "succeeded" for j in done.values()), done
        yield daemon, done, mnist_5k().x.numpy()[5000 - CONCURRENT:, 0]  # (24, 28, 28) digits no job trained on
    finally:
        daemon.stop()


def _parity_npz() -> bytes:
    digits = mnist_5k()
    index = np.random.default_rng(0).permutation(len(digits))[:300]
    return npz(digits.x.numpy()[index, 0], digits.y.numpy()[index] % 2)


def _references(daemon: Daemon, job: dict, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(onnxruntime on the job's model.onnx, the job's merged.safetensors in PyTorch) on the same preprocessed x."""
    loaded = merged_model(daemon, job)
    classes = [str(i) for i in range(loaded.model.head.out_features)]
    inputs = loaded.preprocess(TaskData("image", torch.from_numpy(x)[:, None], torch.zeros(len(x), dtype=torch.int64),
                                        classes, labelled=False))  # (N, 3, 16, 16)
    with torch.no_grad():
        merged = loaded.model.eval()(inputs)
    return OnnxRunner(artifact(daemon, job, "model.onnx"), threads=1)(inputs), merged  # the daemon's EDGED_PREDICT_THREADS=1


def test_the_compiled_task_predicts_through_its_onnx_artifact(served):
    daemon, jobs, x = served
    task_id = jobs["onnx"]["metrics"]["task_id"]
    task = daemon.get(f"/v1/tasks/{task_id}").json()
    assert (task["compiled_backend"], task["compiled_artifact"], task["serving_backend"]) == \
        ("onnxruntime", "model.onnx", "onnxruntime")
    response = predict(daemon, task_id, x[:8], logits="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "onnxruntime" and body["backend_reason"] is None and body["switch_ms"] == 0
    logits = torch.tensor(body["logits"])  # (8, 10)
    onnx, merged = _references(daemon, jobs["onnx"], x[:8])
    assert torch.equal(logits, onnx)  # exactly the job's artifact under onnxruntime
    assert torch.allclose(logits, merged, atol=1e-4, rtol=0)  # and the merged model within fp32 tolerance
    assert not torch.equal(logits, merged)  # a different runtime really answered (its sums differ in the last bits)


def test_the_eager_task_says_so(served):
    daemon, jobs, x = served
    task_id = jobs["eager"]["metrics"]["task_id"]
    task = daemon.get(f"/v1/tasks/{task_id}").json()
    assert task["compiled_backend"] is None and task["serving_backend"] == "eager"
    body = predict(daemon, task_id, x[:2]).json()
    assert body["backend"] == "eager" and body["backend_reason"] is None


def test_without_tensorrt_an_engine_task_serves_eager_and_says_why(served):
    """A task published where TensorRT built its engine, served from a data directory on a machine without
    TensorRT: its row names an engine blob that is not even stored, so any attempt to load it would fail."""
    if runtime_probe("tensorrt")[0]:
        pytest.skip("TensorRT runs here")
    daemon, jobs, x = served
    eager = daemon.get(f"/v1/tasks/{jobs['eager']['metrics']['task_id']}").json()
    db = open_db(daemon.data_dir / "edged.db")
    try:
        row = dict(next(db.query("SELECT * FROM tasks WHERE id = ?", [eager["id"]])))
        db.table("tasks").insert({**row, "id": "engine-task", "job_id": None, "compiled_backend": "tensorrt",
                                  "compiled_artifact": "model.engine", "compiled_blob": "0" * 64})
    finally:
        db.close()
    task = daemon.get("/v1/tasks/engine-task").json()
    assert task["serving_backend"] == "eager" and "tensorrt cannot run here" in task["serving_backend_reason"]
    for _ in range(2):
        body = predict(daemon, "engine-task", x[:4], logits="true").json()
        assert body["backend"] == "eager" and body["backend_reason"] == task["serving_backend_reason"]
    assert body["logits"] == predict(daemon, eager["id"], x[:4], logits="true").json()["logits"]  # the same delta
    assert daemon.output().count("task engine-task: tensorrt cannot run here") == 1  # warned once, not per predict


def test_concurrent_predicts_on_the_compiled_task_share_micro_batches_and_are_each_right(served):
    daemon, jobs, x = served
    task_id = jobs["onnx"]["metrics"]["task_id"]
    onnx, _ = _references(daemon, jobs["onnx"], x)  # (24, 10), each sample alone in its row

    def ask(i: int) -> dict:
        with httpx.Client(headers=AUTH, timeout=120) as client:
            response = client.post(f"{daemon.url}/v1/tasks/{task_id}/predict", params={"logits": "true"},
                                   files={"file": ("x.npz", npz(x[i:i + 1]))})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(CONCURRENT)))
    for i, body in enumerate(answers):
        assert body["backend"] == "onnxruntime"
        # a row's sums do not depend on the other rows of the batch; allow the last bits for the batch's kernels
        assert torch.allclose(torch.tensor(body["logits"][0]), onnx[i], atol=1e-5, rtol=0), i
    assert max(body["batch_requests"] for body in answers) > 1  # requests really shared micro-batches
    compiled = daemon.get("/v1/serving").json()["compiled"]
    assert compiled["entries"] == 1 and compiled["loads"] == 1  # one session, made on first use, kept


def test_a_damaged_artifact_answers_a_clear_error_and_other_tasks_keep_answering(served):
    daemon, jobs, x = served
    onnx_task, eager_task = (jobs[name]["metrics"]["task_id"] for name in ("onnx", "eager"))
    blob = daemon.get(f"/v1/tasks/{onnx_task}").json()["compiled_blob"]
    # the task outlives its job: deleting the job keeps the artifact's blob, and a fresh daemon loads it
    assert httpx.delete(f"{daemon.url}/v1/jobs/{jobs['onnx']['id']}", headers=AUTH, timeout=30).status_code == 204
    daemon.stop()
    daemon.start()
    assert predict(daemon, onnx_task, x[:1]).json()["backend"] == "onnxruntime"
    stored = BlobStore(daemon.data_dir / "blobs").path(blob)
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    daemon.stop()
    daemon.start()  # no session in memory: the next predict reads the damaged file
    for problem in ("corrupt", "missing"):
        response = predict(daemon, onnx_task, x[:1])
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "corrupt" and onnx_task in error["message"] and "model.onnx" in error["message"]
        assert problem in error["message"] and error["detail"]["task"] == onnx_task
        assert predict(daemon, eager_task, x[:1]).status_code == 200  # the other task keeps answering
        assert daemon.get(f"/v1/tasks/{onnx_task}").json()["compiled_blob"] == blob  # nothing stored was changed
        if problem == "corrupt":
            assert stored.read_bytes() == bytes(damaged)
            stored.unlink()

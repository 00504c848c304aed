"""Published tasks served by a real `edged serve`: two jobs publish two tasks on one resident base, each task
predicts what its job's merged model predicts, switches under concurrent predicts never mix tasks, a
deleted task is freed, and bad inputs get a 4xx that says what is accepted."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, MODEL, wait_for
from tasks_helpers import merged_model, mnist_sample, npz, predict, run_job, single_thread_logits
from edged.data.bundled import mnist_5k
from edged.data.task import TaskData
from edged.store.db import open_db
from edged.tasks.server import SWITCH_FLUSH_S

PREDICT_IMAGES = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A daemon with two published tasks on the test base: the ten digits, and even/odd ("parity")."""
    daemon = Daemon(tmp_path_factory.mktemp("serving"))
    daemon.start()
    x, y = mnist_sample(300, seed=0)
    try:
        jobs = {name: run_job(daemon, name, x, labels, FAST_JOB) for name, labels in (("digits", y), ("parity", y % 2))}
        yield daemon, jobs, mnist_5k().x.numpy()[5000 - PREDICT_IMAGES:, 0]  # digits no job trained on
    finally:
        daemon.stop()


def _merged_logits(daemon: Daemon, job: dict, x: np.ndarray) -> torch.Tensor:
    """The job's merged.safetensors, loaded here the documented way, on the same preprocessed inputs."""
    loaded = merged_model(daemon, job)
    classes = [str(i) for i in range(loaded.model.head.out_features)]
    inputs = loaded.preprocess(TaskData("image", torch.from_numpy(x)[:, None], torch.zeros(len(x), dtype=torch.int64),
                                        classes, labelled=False))
    return single_thread_logits(loaded.model, inputs)


def test_two_jobs_publish_two_tasks_whose_predictions_are_their_merged_models(served):
    daemon, jobs, x = served
    tasks = {t["job_id"]: t for t in daemon.get("/v1/tasks").json()}
    assert set(tasks) == {job["id"] for job in jobs.values()}
    for name, job in jobs.items():
        task = tasks[job["id"]]
        assert job["metrics"]["task_id"] == task["id"] and task["base_model"] == MODEL
        assert task["classes"] == ([str(i) for i in range(10)] if name == "digits" else ["0", "1"])
        response = predict(daemon, task["id"], x, logits="true", top_k=2)
        assert response.status_code == 200, response.text
        body = response.json()
        logits = torch.tensor(body["logits"])
        assert torch.equal(logits, _merged_logits(daemon, job, x)), name  # bit for bit, CPU fp32
        assert len(body["predictions"]) == PREDICT_IMAGES and all(len(p) == 2 for p in body["predictions"])
        best = body["predictions"][0][0]
        assert best["index"] == int(logits[0].argmax()) and best["class"] == task["classes"][best["index"]]
        assert best["probability"] == pytest.approx(float(torch.softmax(logits[0], 0).max()))
    assert daemon.get("/v1/serving").json()["bases"] == 1  # both tasks on one resident base


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_files_predict_like_the_same_pixels_in_annpz(served):
    daemon, jobs, x = served
    task_id = jobs["digits"]["metrics"]["task_id"]
    files = [("file", (f"{i}.png", _png(image))) for i, image in enumerate(x[:3])]
    as_files = httpx.post(f"{daemon.url}/v1/tasks/{task_id}/predict", headers=AUTH, files=files, timeout=60,
                          params={"logits": "true"})
    assert as_files.status_code == 200, as_files.text
    as_npz = predict(daemon, task_id, x[:3], logits="true")
    assert torch.equal(torch.tensor(as_files.json()["logits"]), torch.tensor(as_npz.json()["logits"]))


def test_alternating_switches_under_concurrent_predicts_never_mix_tasks(served):
    daemon, jobs, x = served
    ids = {name: job["metrics"]["task_id"] for name, job in jobs.items()}
    expected = {name: predict(daemon, ids[name], x[:1], logits="true").json()["logits"][0] for name in ids}
    before = daemon.get("/v1/serving").json()["switches"]
    order = ["digits", "parity"] * 500  # 1,000 requests, each a switch when served alone

    def ask(name: str) -> tuple[str, dict]:
        with httpx.Client(headers=AUTH, timeout=120) as client:
            response = client.post(f"{daemon.url}/v1/tasks/{ids[name]}/predict", params={"logits": "true"},
                                   files={"file": ("x.npz", npz(x[:1]))})
        assert response.status_code == 200, response.text
        return name, response.json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, order))
    for name, body in answers:
        assert body["task"] == ids[name] and len(body["logits"][0]) == len(expected[name])
        assert body["logits"][0] == pytest.approx(expected[name], abs=1e-5)  # its own task, never the other's
    serving = daemon.get("/v1/serving").json()
    assert serving["switches"] - before >= 100  # the tasks really alternated on the one base
    assert serving["cache"]["hits"] >= serving["switches"] - 2  # after the first load, every switch was cached


def test_serving_is_recorded_per_task_in_sqlite_and_on_metrics(served):
    daemon, jobs, x = served
    task_id = jobs["digits"]["metrics"]["task_id"]
    assert predict(daemon, task_id, x[:2]).status_code == 200
    assert predict(daemon, task_id, x[:3]).status_code == 200

    def recorded() -> tuple[list[dict], tuple]:
        db = open_db(daemon.data_dir / "edged.db")
        try:
            minutes = list(db.query("SELECT * FROM task_minutes WHERE task_id = ?", [task_id]))
            switches = db.execute("SELECT count(*), sum(bytes_moved) FROM task_switches WHERE to_task = ?",
                                  [task_id]).fetchone()
        finally:
            db.close()
        return minutes, switches

    # the inference thread writes its records at most once a second, and within a second of the last request
    minutes, switches = wait_for(recorded, lambda r: sum(m["requests"] for m in r[0]) >= 2, timeout_s=10)
    assert all(0 < m["p50_ms"] <= m["p99_ms"] for m in minutes)
    assert switches[0] >= 1 and switches[1] > 0
    metrics = daemon.get("/metrics").text
    assert f'edged_task_requests_total{{task="{task_id}"}}' in metrics
    assert f'edged_task_latency_seconds{{quantile="0.99",task="{task_id}"}}' in metrics
    assert 'edged_task_cache_lookups_total{result="hit"}' in metrics


def test_a_job_aligned_to_the_bases_tasks_shares_their_blocks(served):
    daemon, jobs, x = served
    digits = mnist_5k()
    index = np.random.default_rng(1).permutation(len(digits))[:300]
    labels = (digits.y.numpy()[index] >= 5).astype(np.int64)  # a third task: small vs large digits
    upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=60,
                        files={"file": ("halves.npz", npz(digits.x.numpy()[index, 0], labels))})
    submitted = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=60,
                           json={**FAST_JOB, "dataset": upload.json()["id"], "align_strength": 4.0})
    assert submitted.status_code == 202, submitted.text
    job = wait_for(daemon.job(submitted.json()["id"]), lambda j: j["state"] in ("succeeded", "failed"), timeout_s=240)
    assert job["state"] == "succeeded", job
    alignment = job["metrics"]["alignment"]
    assert alignment["union_blocks_before"] > 0  # the two published tasks' blocks
    assert 0 < alignment["shared_blocks"] <= alignment["blocks"]
    grown = alignment["union_blocks_after"] - alignment["union_blocks_before"]
    assert grown == alignment["blocks"] - alignment["shared_blocks"]


def test_bad_inputs_get_a_4xx_that_says_what_is_accepted(served):
    daemon, jobs, x = served
    task_id = jobs["digits"]["metrics"]["task_id"]
    url = f"{daemon.url}/v1/tasks/{task_id}/predict"
    cases = [
        (httpx.post(url, headers=AUTH, json={"texts": ["a digit"]}), 422, "takes image"),
        (httpx.post(url, headers=AUTH, files={"file": ("x.npz", npz(x[:0]))}), 422, "no inputs"),
        (httpx.post(url, headers=AUTH, files={"file": ("a.png", b"not a png")}), 422, "not a readable image"),
        (httpx.post(url, headers=AUTH, files={"file": ("x.npz", npz(x.astype(np.float64)))}), 422, "uint8"),
        (httpx.post(url, headers=AUTH, files={"file": ("x.npz", npz(x[:, :, :, None, None]))}), 422, "uint8"),
        (httpx.post(url, content=b"raw", headers={**AUTH, "Content-Type": "text/plain"}), 422,
         "not accepted"),
        (httpx.post(f"{daemon.url}/v1/tasks/nope/predict", headers=AUTH, json={"texts": ["x"]}), 404, "no task"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"], response.text


def _scalar(daemon: Daemon, sql: str, *args: str) -> int:
    db = open_db(daemon.data_dir / "edged.db")
    try:
        return db.execute(sql, list(args)).fetchone()[0]
    finally:
        db.close()


def _switches_naming(daemon: Daemon, task_id: str) -> int:
    return _scalar(daemon, "SELECT count(*) FROM task_switches WHERE to_task = ? OR from_task = ?", task_id, task_id)


def _requests_of(daemon: Daemon, task_id: str) -> int:
    return _scalar(daemon, "SELECT coalesce(sum(requests), 0) FROM task_minutes WHERE task_id = ?", task_id)


def test_a_deleted_task_is_freed(served):
    daemon, jobs, x = served
    task_id, other = jobs["parity"]["metrics"]["task_id"], jobs["digits"]["metrics"]["task_id"]
    for task in (other, task_id):
        assert predict(daemon, task, x[:1]).status_code == 200  # a switch to parity: active and cached
    wait_for(lambda: _switches_naming(daemon, task_id), lambda n: n >= 1, timeout_s=10)  # its switches are stored
    assert predict(daemon, other, x[:1]).status_code == 200  # one more naming it, still in the unflushed log
    entries = daemon.get("/v1/serving").json()["cache"]["entries"]
    assert httpx.delete(f"{daemon.url}/v1/tasks/{task_id}", headers=AUTH, timeout=30).status_code == 204
    assert daemon.get(f"/v1/tasks/{task_id}").status_code == 404
    assert predict(daemon, task_id, x[:1]).status_code == 404
    assert daemon.get("/v1/serving").json()["cache"]["entries"] == entries - 1
    # its delta blob stays: the job's delta.safetensors artifact still names it
    artifact = httpx.get(f"{daemon.url}/v1/jobs/{jobs['parity']['id']}/artifacts/delta.safetensors", headers=AUTH)
    assert artifact.status_code == 200
    # its switch history is gone, the log flushed after the delete included: prefetch would learn from it at restart
    served_before = _requests_of(daemon, other)
    time.sleep(SWITCH_FLUSH_S + 0.2)
    assert predict(daemon, other, x[:1]).status_code == 200  # a flush falls due: this request's minute is written
    wait_for(lambda: _requests_of(daemon, other), lambda n: n > served_before, timeout_s=10)
    assert _switches_naming(daemon, task_id) == 0

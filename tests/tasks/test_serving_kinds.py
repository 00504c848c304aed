"""Every kind of published task through a real `edged serve`, on real weights and real data: a text task
(all-MiniLM-L6-v2 on BBC News), the registered MobileNetV2 (ImageNet weights) on image files, a user
factory on tabular data (mlxtend's wine measurements). Each predicts exactly what its job's merged model
predicts; the tasks survive a kill -9 of the daemon with their records intact; and each task's energy per
inference is recorded where a power source reads (a fake Orin NX INA3221 tree), and is null where none does."""

from __future__ import annotations

import csv
import io
import signal
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from daemon import AUTH, Daemon
from fake_sysfs import FakeIna3221
from jobs_helpers import TEXT_JOB, bbc_jsonl, digits_npz, wait_for
from tasks_helpers import merged_model, npz, single_thread_logits
from edged.data.bundled import bbc_news, mnist_5k, package_dir
from edged.data.task import TaskData
from edged.jobs.states import FINAL_STATES
from edged.store.db import open_db

BOARD_MV, BOARD_MA = 5000, 400  # the fake board draws 2 W on VDD_IN
DECODE_MB = 64  # the daemon's decode budget: small, so that the bombs below are quick to build
WINE = "edged_jobs_test_model:wine_mlp"
JOBS = {  # a few samples and one epoch each: the point is the serving path, not accuracy
    "text": {**TEXT_JOB, "method": "taskedge"},
    "mobilenet": {"model": "mobilenet_v2", "method": "taskedge", "epochs": 1, "batch_size": 32, "budget": 0.001,
                  "lr": 0.01, "image_size": 32},
    "wine": {"model": WINE, "method": "taskedge", "epochs": 1, "batch_size": 16, "budget": 0.05, "lr": 0.01},
}


def wine_csv() -> tuple[bytes, np.ndarray]:
    """mlxtend's 178 wines (13 measurements, cultivar 0..2) as a .csv upload, and the features (178, 13)."""
    table = np.loadtxt(package_dir("mlxtend", "mlxtend") / "data/data/wine.csv", delimiter=",")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([f"f{i}" for i in range(13)] + ["label"])
    writer.writerows([*row[:13], int(row[13])] for row in table)
    return out.getvalue().encode(), table[:, :13].astype(np.float32)


@dataclass
class Served:
    daemon: Daemon
    board: FakeIna3221
    jobs: dict[str, dict]
    tasks: dict[str, str]  # name -> task id


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    """A daemon whose only power source is a fake Orin NX INA3221 tree, with three published tasks."""
    root = tmp_path_factory.mktemp("kinds")
    board = FakeIna3221(root / "sys")
    board.add_device(1, "ina3221", "1-0040", [("VDD_IN", BOARD_MV, BOARD_MA), ("VDD_CPU_GPU_CV", 5000, 100),
                                             ("VDD_SOC", 5000, 60)])
    daemon = Daemon(root, {"EDGED_POWER_SOURCE": "ina3221", "EDGED_SYSFS_ROOT": str(board.root),
                           "EDGED_DECODE_MEMORY_MB": str(DECODE_MB)})
    daemon.start()
    state = Served(daemon, board, {}, {})
    try:
        uploads = {"text": ("bbc.jsonl", bbc_jsonl(48)), "mobilenet": ("digits.npz", digits_npz(96)),
                   "wine": ("wine.csv", wine_csv()[0])}
        ids = {}
        for name, (filename, data) in uploads.items():
            upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, files={"file": (filename, data)}, timeout=60)
            assert upload.status_code == 201, upload.text
            job = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json={**JOBS[name], "dataset": upload.json()["id"]},
                             timeout=60)
            assert job.status_code == 202, job.text
            ids[name] = job.json()["id"]
        for name, job_id in ids.items():
            job = wait_for(daemon.job(job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=240)
            assert job["state"] == "succeeded", job
            state.jobs[name], state.tasks[name] = job, job["metrics"]["task_id"]
        yield state
    finally:
        state.daemon.stop()


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _test_images() -> list[np.ndarray]:
    """Digits no job trained on (the last of the 5,000): two grayscale 28 x 28, one enlarged to RGB 40 x 40."""
    x = mnist_5k().x.numpy()[-3:, 0]
    rgb = np.asarray(Image.fromarray(x[2]).convert("RGB").resize((40, 40)))
    return [x[0], x[1], rgb]


def _texts() -> list[str]:
    return [text[:300] for text in bbc_news().x[-3:]]  # type: ignore[index]  # articles no job trained on


def predict(daemon: Daemon, task_id: str, name: str) -> httpx.Response:
    """The test inputs of task kind `name` as a client sends them: texts as JSON, image files, an .npz of features."""
    url = f"{daemon.url}/v1/tasks/{task_id}/predict"
    params = {"logits": "true", "top_k": 2}
    if name == "text":
        return httpx.post(url, headers=AUTH, params=params, json={"texts": _texts()}, timeout=60)
    if name == "mobilenet":
        files = [("file", (f"{i}.png", _png(image))) for i, image in enumerate(_test_images())]
        return httpx.post(url, headers=AUTH, params=params, files=files, timeout=60)
    return httpx.post(url, headers=AUTH, params=params, files={"file": ("x.npz", npz(wine_csv()[1][::20]))},
                      timeout=60)


def merged_logits(daemon: Daemon, job: dict, name: str) -> torch.Tensor:
    """The job's merged.safetensors loaded the documented way, run here on the same inputs, one torch thread."""
    loaded = merged_model(daemon, job)
    classes = loaded.model.head.out_features
    names = [str(i) for i in range(classes)]

    def unlabelled(kind: str, x) -> TaskData:
        return TaskData(kind, x, torch.zeros(len(x), dtype=torch.int64), names, labelled=False)

    if name == "text":
        inputs = loaded.preprocess(unlabelled("text", _texts()))
    elif name == "mobilenet":  # images of different shapes: each preprocessed alone, one batch
        images = [torch.from_numpy(i[None] if i.ndim == 2 else i.transpose(2, 0, 1).copy())[None] for i in _test_images()]
        inputs = torch.cat([loaded.preprocess(unlabelled("image", image)) for image in images])  # type: ignore[list-item]
    else:
        inputs = loaded.preprocess(unlabelled("tabular", torch.from_numpy(wine_csv()[1][::20])))
    return single_thread_logits(loaded.model, inputs)


@pytest.mark.parametrize("name", list(JOBS))
def test_each_kind_predicts_what_its_merged_model_predicts(served, name):
    task = served.daemon.get(f"/v1/tasks/{served.tasks[name]}").json()
    assert task["kind"] == {"text": "text", "mobilenet": "image", "wine": "tabular"}[name]
    assert task["features"] == (13 if name == "wine" else None)  # what a tabular predict is checked against
    response = predict(served.daemon, task["id"], name)
    assert response.status_code == 200, response.text
    body = response.json()
    logits = torch.tensor(body["logits"])
    assert torch.equal(logits, merged_logits(served.daemon, served.jobs[name], name))  # bit for bit, CPU fp32
    assert len(body["predictions"]) == len(logits) == (9 if name == "wine" else 3)
    best = body["predictions"][0][0]
    assert best["index"] == int(logits[0].argmax()) and best["class"] == task["classes"][best["index"]]


def test_each_kind_refuses_the_other_kinds_inputs(served):
    daemon = served.daemon
    url = f"{daemon.url}/v1/tasks/{{}}/predict"
    image, features = npz(_test_images()[0][None]), npz(wine_csv()[1][:2])
    cases = [
        ("text", {"files": {"file": ("x.npz", image)}}, 422, "takes text"),
        ("text", {"json": {"texts": []}}, 422, "texts"),
        ("text", {"json": {"text": "one"}}, 422, "texts"),
        ("mobilenet", {"files": {"file": ("x.npz", features)}}, 422, "uint8"),
        ("wine", {"files": {"file": ("a.png", _png(_test_images()[0]))}}, 422, "takes an .npz"),
        ("wine", {"json": {"texts": ["a wine"]}}, 422, "takes tabular"),
        ("wine", {"files": {"file": ("x.npz", npz(wine_csv()[1][:2, :5]))}}, 422, "5 features per sample; this task takes 13"),
        ("wine", {"files": {"file": ("x.npz", npz(np.array([["a"] * 13])))}}, 422, "numbers"),
        ("wine", {"files": {"file": ("x.npz", npz(np.full((2, 13), np.nan, np.float32)))}}, 422, "NaN"),
        ("wine", {"files": {"file": ("x.npz", npz(np.full((2, 13), 1e300)))}}, 422, "beyond-float32"),
        ("wine", {"files": {"file": ("x.npz", npz(np.full((2, 13), 3e38, np.float32)))}}, 422, "infinite logits"),
        ("mobilenet", {"files": {"file": ("x.npz", npz(np.zeros((1, 0, 5), np.uint8)))}}, 422, "[1, 0, 5]"),
        ("mobilenet", {"files": {"file": ("x.npz", _zerosnpz((24, 3, 1024, 1024)))}}, 413, "decode memory budget"),
        ("mobilenet", {"files": [("file", (f"{i}.png", _blank_png(3000))) for i in range(3)]}, 413,
         "decode memory budget"),
        ("text", {"json": {"texts": ["a" * 2**20, "b"]}}, 413, "characters"),
    ]
    for name, body, status, words in cases:
        response = httpx.post(url.format(served.tasks[name]), headers=AUTH, timeout=60, **body)
        assert response.status_code == status, (name, words, response.text)
        assert words in response.json()["error"]["message"], (name, response.text)
    for name, task_id in served.tasks.items():  # and the inference thread serves on
        assert predict(daemon, task_id, name).status_code == 200


def _zerosnpz(shape: tuple[int, ...]) -> bytes:
    """An .npz whose uint8 `x` of `shape` is all zeros: MBs compressed, GBs decoded (written in chunks)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
        chunk, left = bytes(2**24), int(np.prod(shape))
        while left:
            member.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))
    return buffer.getvalue()


def _blank_png(side: int) -> bytes:
    """A black side x side grayscale PNG: kilobytes sent, side * side * 3 bytes reserved to decode."""
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def _minutes(daemon: Daemon, task_id: str) -> list[dict]:
    db = open_db(daemon.data_dir / "edged.db")
    try:
        return list(db.query("SELECT * FROM task_minutes WHERE task_id = ? ORDER BY minute", [task_id]))
    finally:
        db.close()


def test_each_task_records_its_energy_per_inference_from_the_power_source(served):
    daemon, watts = served.daemon, BOARD_MV * BOARD_MA / 1e6
    answers: dict[str, list[dict]] = {name: [] for name in served.tasks}
    for _ in range(3):
        for name, task_id in served.tasks.items():
            response = predict(daemon, task_id, name)
            assert response.status_code == 200, response.text
            answers[name].append(response.json())
    for body in (b for bodies in answers.values() for b in bodies):
        # constant power over a window inside the request's: the forward's joules, never more than the whole wait
        assert 0 < body["energy_j"] <= watts * body["latency_ms"] / 1000 + 1e-9, body
    served.board.set_current("VDD_IN", BOARD_MA * 100)  # the board now draws 200 W
    try:
        hot = predict(daemon, served.tasks["mobilenet"], "mobilenet").json()
    finally:
        served.board.set_current("VDD_IN", BOARD_MA)
    assert hot["energy_j"] > watts * hot["latency_ms"] / 1000  # read from the rails at the time, not a constant

    for name, task_id in served.tasks.items():
        minutes = wait_for(lambda t=task_id: _minutes(daemon, t),  # written within a second of the last request
                           lambda rows, n=name: sum(r["energy_j"] or 0 for r in rows) >= sum(
                               b["energy_j"] for b in answers[n]) - 1e-9, timeout_s=10)
        for row in minutes:  # every forward was measured: joules over the minute's samples
            assert row["energy_per_inference_j"] == pytest.approx(row["energy_j"] / row["samples"])
    serving = {row["task_id"]: row for row in daemon.get("/v1/serving").json()["tasks"]}
    metrics = daemon.get("/metrics").text
    for task_id in served.tasks.values():
        assert serving[task_id]["energy_j"] > 0 and serving[task_id]["energy_per_inference_j"] > 0
        assert f'edged_task_energy_joules_total{{task="{task_id}"}}' in metrics
        assert f'edged_task_energy_per_inference_joules{{task="{task_id}"}}' in metrics


def _small_request(name: str) -> dict:
    """One sample of task kind `name`, as httpx.post keyword arguments."""
    if name == "text":
        return {"json": {"texts": ["markets rallied after the vote"]}}
    x = _test_images()[0][None] if name == "mobilenet" else wine_csv()[1][:1]
    return {"files": {"file": ("x.npz", npz(x))}}


def _hammer(daemon: Daemon, tasks: dict[str, str], stop: threading.Event) -> None:
    """Predicts on every task in turn until `stop` or until the daemon is gone: switches and records in flight."""
    requests = {name: _small_request(name) for name in tasks}
    with httpx.Client(headers=AUTH, timeout=10) as client:
        while not stop.is_set():
            for name, task_id in tasks.items():
                try:
                    client.post(f"{daemon.url}/v1/tasks/{task_id}/predict", **requests[name])
                except httpx.TransportError:
                    return


def _records(daemon: Daemon) -> tuple[str, dict[str, int]]:
    """SQLite's integrity check, and the requests recorded per task plus the switch rows (key "switches")."""
    db = open_db(daemon.data_dir / "edged.db")
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        counts = dict(db.execute("SELECT task_id, sum(requests) FROM task_minutes GROUP BY task_id").fetchall())
        counts["switches"] = db.execute("SELECT count(*) FROM task_switches").fetchone()[0]
    finally:
        db.close()
    return check, counts


def test_the_tasks_survive_a_kill_9_with_their_records_intact(served, tmp_path):
    daemon = served.daemon
    before = {name: predict(daemon, task_id, name).json()["logits"] for name, task_id in served.tasks.items()}
    time.sleep(1.5)  # the records of these predicts are written
    _, recorded = _records(daemon)
    stop = threading.Event()
    hammer = threading.Thread(target=_hammer, args=(daemon, served.tasks, stop))
    hammer.start()
    time.sleep(2.0)  # switches, micro-batches and record flushes under way
    daemon.stop(signal.SIGKILL)
    stop.set()
    hammer.join(30)
    check, after_kill = _records(daemon)
    assert check == "ok"
    assert after_kill["switches"] >= recorded["switches"]
    assert all(after_kill[t] >= recorded[t] for t in served.tasks.values())  # nothing written before was lost

    # the same data directory, now without a power source: energy is null, not zero
    served.daemon = daemon = Daemon(daemon.data_dir.parent, {"EDGED_POWER_SOURCE": "none"})
    daemon.start()
    listed = {t["id"] for t in daemon.get("/v1/tasks").json()}
    assert listed == set(served.tasks.values())
    for name, task_id in served.tasks.items():
        response = predict(daemon, task_id, name)
        assert response.status_code == 200, response.text
        assert response.json()["logits"] == before[name], name  # bit for bit, as before the kill
        assert response.json()["energy_j"] is None
    _, after = wait_for(lambda: _records(daemon),
                        lambda r: all(r[1][t] >= after_kill[t] + 1 for t in served.tasks.values()), timeout_s=10)
    assert after["switches"] >= after_kill["switches"] + 2  # the new daemon records its switches after the old ones

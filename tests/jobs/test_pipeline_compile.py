"""The job pipeline's 2:4 + compile + telemetry stages, through the real app, SQLite and worker process.

Energy comes from the RAPL power source reading a powercap tree under the daemon's sysfs root (the
setting that exists for this): a thread advances its counter at a known power, so the joules each
stage records can be checked against its wall time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from jobs_helpers import FAST_JOB, upload, wait_for
from edged.api.app import create_app
from edged.compile.registry import available_backends
from edged.compile.onnx_export import check_onnx_2_4
from edged.jobs import records
from edged.jobs.states import FINAL_STATES
from edged.sparse.nm import check_2_4
from edged.store.db import open_db
from edged.telemetry.stages import stage_rows

POWER_W = 2.0  # what the counter thread "draws"
WRITE_PERIOD_S = 0.01


class CountingRaplZone:
    """A package zone under <root>/class/powercap whose energy_uj grows at POWER_W while started."""

    def __init__(self, root: Path) -> None:
        self.zone = root / "class" / "powercap" / "intel-rapl:0"
        self.zone.mkdir(parents=True)
        (self.zone / "name").write_text("package-0\n")
        (self.zone / "max_energy_range_uj").write_text("262143328850\n")
        self._write(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _write(self, energy_uj: int) -> None:
        tmp = self.zone / "energy_uj.tmp"
        tmp.write_text(f"{energy_uj}\n")
        os.replace(tmp, self.zone / "energy_uj")  # a reader never sees a half-written file

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(WRITE_PERIOD_S):
            self._write(int((time.monotonic() - start) * POWER_W * 1e6))

    def __enter__(self) -> "CountingRaplZone":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def rapl_client(tmp_path, settings):
    sysfs = tmp_path / "sys"
    rapl_settings = settings.model_copy(update={"sysfs_root": sysfs, "power_source": "rapl"})
    with CountingRaplZone(sysfs), TestClient(create_app(rapl_settings)) as c:
        yield c


CORE_STAGES = {"validate", "prepare", "evaluate_before", "dense_reference", "calibrate", "prune", "evaluate_pruned",
               "score", "mask", "train", "merge", "refit_head", "evaluate", "export", "compile", "benchmark", "record"}


def _run_job(client, auth, **overrides) -> dict:
    dataset = upload(client, auth, count=300)
    response = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset, **overrides})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    return wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth).json(),
                    lambda j: j["state"] in FINAL_STATES, timeout_s=120)


def _download(client, auth, job_id: str, name: str, directory) -> str:
    response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=auth)
    assert response.status_code == 200, response.text
    path = directory / name
    path.write_bytes(response.content)
    return str(path)


def test_2_4_job_compiled_with_onnxruntime(rapl_client, auth, tmp_path):
    client = rapl_client
    # epochs: a train stage of a second or more, so the fake counter's 10 ms writes (a thread of this
    # process, delayed when the box is loaded) average out
    job = _run_job(client, auth, sparsity="2:4", compile="onnxruntime", epochs=12)
    assert job["state"] == "succeeded", job
    m = job["metrics"]

    # accuracy of the compiled artifact, re-measured on the validation split, agrees with PyTorch's
    assert m["accuracy_2_4_adapted"] == m["accuracy_after"] == m["sparsity"]["accuracy_2_4_adapted"]
    # what 2:4 costs: the same adaptation of the unpruned model, and the pruned model before recovery
    assert m["sparsity"]["accuracy_dense_adapted"] > m["accuracy_before"]
    assert 0 <= m["sparsity"]["accuracy_pruned_no_recovery"] <= 1
    assert abs(m["accuracy_compiled"] - m["accuracy_after"]) <= 1 / m["val_samples"] + 1e-9
    assert m["compile"]["backend"] == "onnxruntime" and m["compile"]["val_samples"] == m["val_samples"]
    assert m["compile"]["prediction_agreement"] >= 0.98 and m["compiled_max_abs_logit_diff"] < 1e-3
    report = m["compile"]["report"]
    assert report["details"]["pattern_check"]["ok"] and set(report["dense"]) >= set(m["sparsity"]["pruned_layers"])

    # the 2:4 pattern holds in the merged weights and in the ONNX file the job stored
    artifacts = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json()}
    assert {"delta.safetensors", "merged.safetensors", "model.onnx"} <= artifacts
    merged = load_file(_download(client, auth, job["id"], "merged.safetensors", tmp_path))
    pruned = m["sparsity"]["pruned_layers"]
    assert pruned and m["sparsity"]["pattern_holds"] and m["sparsity"]["kept_fraction_in_pruned_layers"] == 0.5
    assert all(check_2_4(merged[name]) for name in pruned)
    onnx_check = check_onnx_2_4(_download(client, auth, job["id"], "model.onnx", tmp_path),
                                {name: merged[name] for name in pruned})
    assert onnx_check.ok, onnx_check.problems

    # latency of the dense and the compiled model, in the shape the dashboard reads
    assert set(m["latency"]) == {"dense", "compiled"}
    for stats in m["latency"].values():
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
        assert stats["batch_size"] == FAST_JOB["batch_size"] and stats["throughput_per_s"] > 0
        assert stats["energy_method"] == "counter" and stats["energy_per_inference_j"] >= 0

    # one telemetry row per stage, the core's inner stages included; training samples/s
    db = open_db(client.app.state.settings.db_path)
    try:
        rows = {r["stage"]: r for r in stage_rows(db, job["id"])}
        events = records.events_after(db, job["id"], limit=10_000)
    finally:
        db.close()
    # the compile stage's three phases (build, PyTorch's logits, the compiled model's) move the bar through its span
    plan = next(e["data"]["stages"] for e in events if e["type"] == "plan")
    phases = [e["data"]["progress"] for e in events if e["type"] == "progress" and e["stage"] == "compile"]
    assert phases and phases == sorted(phases) and phases[-1] == pytest.approx(plan["compile"][1])
    assert set(rows) == CORE_STAGES
    assert all(r["wall_s"] >= 0 and r["peak_host_mb"] > 0 for r in rows.values())
    assert all(r["source"] == "rapl" and r["energy_j"] is not None for r in rows.values())
    train = rows["train"]
    assert train["energy_method"] == "counter"
    assert abs(train["energy_j"] - POWER_W * train["wall_s"]) <= 0.25 * POWER_W * train["wall_s"]
    assert rows["train"]["items"] == m["train_samples"] * m["epochs_run"] and rows["train"]["items_per_s"] > 0
    assert rows["compile"]["wall_s"] >= m["stage_seconds"]["compile"] * 0.9


def test_dense_job_without_compile_has_dense_latency_only(client, auth):
    job = _run_job(client, auth)
    assert job["state"] == "succeeded", job
    m = job["metrics"]
    assert set(m["latency"]) == {"dense"}
    assert "accuracy_compiled" not in m and "accuracy_2_4_adapted" not in m and "compile" not in m
    assert "compile" not in m["stage_seconds"] and "benchmark" in m["stage_seconds"]


def test_unavailable_backend_fails_the_job_in_compile(client, auth):
    missing = [name for name, (ok, _) in available_backends().items() if not ok]
    if not missing:
        pytest.skip("every compile backend is available on this machine")
    job = _run_job(client, auth, compile=missing[0])
    assert job["state"] == "failed" and job["stage"] == "compile", job
    assert f"compile backend {missing[0]!r} is not available here" in job["error"] and "available:" in job["error"]

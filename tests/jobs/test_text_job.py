"""The built-in text model (`minilm-l6`) and an image model, end to end through a real `edged serve`: every
stage, the benchmark and the compiled artifacts included, for each kind of method."""

from __future__ import annotations

import signal

import httpx
import pytest

from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, TEXT_JOB, bbc_jsonl, digits_npz, wait_for
from edged.jobs.states import FINAL_STATES


@pytest.fixture
def daemon(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    yield daemon
    daemon.stop(signal.SIGTERM)


def _run_job(daemon: Daemon, job: dict) -> dict:
    response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=job, timeout=30)
    assert response.status_code == 202, response.text
    return wait_for(daemon.job(response.json()["id"]), lambda j: j["state"] in FINAL_STATES, timeout_s=240)


def _upload(daemon: Daemon, name: str, data: bytes) -> str:
    response = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, files={"file": (name, data)}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_text_and_image_jobs_succeed_end_to_end(daemon):
    text = _upload(daemon, "bbc.jsonl", bbc_jsonl(48))
    compile_for = {"taskedge": "onnxruntime", "lora": "eager"}  # both exporters, on text inputs
    jobs = [{**TEXT_JOB, "dataset": text, "method": method, "compile": compile_for.get(method, "none")}
            for method in ("taskedge", "lora", "full")]
    head_job = {key: value for key, value in TEXT_JOB.items() if key != "lr"}  # only the head trains, by L-BFGS
    jobs.insert(0, {**head_job, "dataset": text, "method": "head", "compile": "none"})
    digits = _upload(daemon, "digits.npz", digits_npz(200))
    jobs.append({**FAST_JOB, "dataset": digits, "compile": "eager", "refit_head": False})
    jobs.append({**FAST_JOB, "dataset": digits, "method": "taso_lora", "compile": "none"})  # rank 1, its default
    for job in jobs:
        done = _run_job(daemon, job)
        assert done["state"] == "succeeded", (job, done["error"])
        refits = job["method"] != "head" and job.get("refit_head", True)  # the head refit on adapted features
        assert ("head_refit" in done["metrics"]) == refits, job
        latency = done["metrics"]["latency"]
        assert latency["dense"]["p50_ms"] > 0
        if job["compile"] != "none":
            assert latency["compiled"]["p50_ms"] > 0
            assert done["metrics"]["compile"]["prediction_agreement"] >= 0.9
        names = {a["name"] for a in daemon.get(f"/v1/jobs/{done['id']}/artifacts").json()}
        assert {"delta.safetensors", "merged.safetensors"} <= names

"""Jobs through the real app, a real SQLite file and real worker processes."""

from __future__ import annotations

import os
import signal

import torch
from safetensors.torch import load_file

from edged_jobs_test_model import small_cnn
from jobs_helpers import FAST_JOB, MODEL, upload, wait_for
from edged.client import parse_sse
from edged.jobs.states import FINAL_STATES
from edged.store.db import open_db


def _submit(client, auth, dataset: str, **overrides) -> str:
    response = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset, **overrides})
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "queued"
    return response.json()["id"]


def _job(client, auth, job_id: str):
    return lambda: client.get(f"/v1/jobs/{job_id}", headers=auth).json()


def _sse_events(client, auth, job_id: str, last_event_id=None) -> list[tuple[str, dict]]:
    headers = {**auth, **({"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {})}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(parse_sse(response.iter_lines()))


def test_job_succeeds_with_metrics_events_and_artifacts(client, auth):
    dataset = upload(client, auth, count=300)
    job_id = _submit(client, auth, dataset)
    events = _sse_events(client, auth, job_id)  # streams live until the job ends
    job = _job(client, auth, job_id)()
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0 and job["error"] is None and job["finished_at"]
    m = job["metrics"]
    for key in ("accuracy_before", "accuracy_after", "trainable_params", "trainable_fraction", "peak_memory_mb"):
        assert key in m
    assert m["trainable_fraction"] < 0.02 and m["trainable_params"] > 0
    assert {"validate", "calibrate", "score", "mask", "train", "evaluate", "export", "record"} <= set(m["stage_seconds"])
    assert job["config"]["adapt"]["epochs"] == 1 and job["config"]["model_options"]["image_size"] == 16

    kinds = [kind for kind, _ in events]
    started = [e["stage"] for kind, e in events if kind == "stage" and e["status"] == "started"]
    assert started[:2] == ["validate", "prepare"] and started[-3:] == ["export", "benchmark", "record"]
    assert "step" in kinds and "epoch" in kinds
    assert kinds[-1] == "end" and events[-1][1]["state"] == "succeeded"
    ids = [e["id"] for kind, e in events if kind != "end"]
    assert ids == sorted(ids)
    # Last-Event-ID: a reconnecting client gets only what it has not seen
    tail = _sse_events(client, auth, job_id, last_event_id=ids[-3])
    assert [e["id"] for kind, e in tail if kind != "end"] == ids[-2:]

    artifacts = client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()
    assert {a["name"] for a in artifacts} == {"delta.safetensors", "merged.safetensors"}
    merged = client.get(f"/v1/jobs/{job_id}/artifacts/merged.safetensors", headers=auth)
    assert merged.status_code == 200 and len(merged.content) == next(
        a["size_bytes"] for a in artifacts if a["name"] == "merged.safetensors")
    path = client.app.state.settings.data_dir / "downloaded.safetensors"
    path.write_bytes(merged.content)
    assert "head.weight" in load_file(str(path))
    assert client.get(f"/v1/jobs/{job_id}/artifacts/nope", headers=auth).status_code == 404
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth).json()] == [job_id]


def test_cancel_a_running_job(client, auth):
    dataset = upload(client, auth, count=1000)
    job_id = _submit(client, auth, dataset, epochs=200)
    wait_for(_job(client, auth, job_id), lambda j: j["stage"] == "train")
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert response.status_code == 202 and response.json()["cancel_requested"]
    job = wait_for(_job(client, auth, job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=20)
    assert job["state"] == "cancelled" and "train" in job["error"]
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_killed_worker_fails_the_job_and_the_api_keeps_answering(client, auth, settings):
    dataset = upload(client, auth, count=1000)
    job_id = _submit(client, auth, dataset, epochs=200)
    wait_for(_job(client, auth, job_id), lambda j: j["stage"] == "train" and j["progress"] > 0.1)
    # Queued behind it: a job whose weights file fits at submit and is replaced before its worker loads it
    # (with a checkpoint keeping its classifier), so the error is the worker's own.
    settings.resolved_models_dir.mkdir(parents=True)
    weights = settings.resolved_models_dir / "cnn.pt"
    torch.save(small_cnn().state_dict(), weights)
    next_id = _submit(client, auth, dataset, model=f"{MODEL}={weights.name}")
    torch.save({**small_cnn().state_dict(), "_fc.weight": torch.zeros(10, 64), "_fc.bias": torch.zeros(10)}, weights)
    db = open_db(settings.db_path)
    worker_pid = db.execute("SELECT worker_pid FROM jobs WHERE id = ?", [job_id]).fetchone()[0]
    db.close()
    os.kill(worker_pid, signal.SIGKILL)  # as the kernel's OOM killer would
    job = wait_for(_job(client, auth, job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=20)
    assert job["state"] == "failed"
    assert "killed by signal SIGKILL during stage train" in job["error"]
    assert client.get("/healthz").json()["status"] == "ok"
    # the manager goes on with the next job; an error inside the worker is a failed job with the reason, the
    # keys that did not fit among it
    failed = wait_for(_job(client, auth, next_id), lambda j: j["state"] in FINAL_STATES)
    assert failed["state"] == "failed" and "during stage validate" in failed["error"]
    assert "set drop_weight_keys: ['_fc.']" in failed["error"] and "unexpected: _fc.bias, _fc.weight" in failed["error"]

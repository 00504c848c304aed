"""`quantize: int8` through a real `edged serve`: the combinations it refuses (422, saying what is accepted) and
a 2:4 + INT8 job compiled with onnxruntime, whose stored QDQ file and metrics are checked."""

from __future__ import annotations

import httpx
from safetensors.torch import load_file

from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for
from edged.compile.qdq import check_qdq_2_4
from edged.jobs.states import FINAL_STATES


def _upload(daemon: Daemon, count: int) -> str:
    response = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, files={"file": ("d.npz", digits_npz(count))},
                          timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


REFUSED = [  # (fields, words of the reason), one daemon for all (it takes seconds to start on a loaded box)
    ({"quantize": "int8"}, "compile 'none' does not run INT8; accepted: compile 'auto', 'tensorrt', 'onnxruntime'"),
    ({"quantize": "int8", "compile": "eager"}, "compile 'eager' does not run INT8; accepted"),
    ({"quantize": "int8", "compile": "cusparselt"}, "compile 'cusparselt' does not run INT8; accepted"),
    ({"quantize": "int4", "compile": "onnxruntime"}, "'none' or 'int8'"),
]


def test_int8_combinations_are_refused_saying_what_is_accepted(daemon):
    dataset = _upload(daemon, 40)
    for fields, words in REFUSED:
        response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json={**FAST_JOB, "dataset": dataset, **fields},
                              timeout=30)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert set(error) == {"code", "message", "detail"}
        reasons = [r for r in error["detail"] if r["loc"] == ["body", "quantize"]]
        assert len(reasons) == 1 and words in reasons[0]["msg"], (fields, error)
    assert httpx.get(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=30).json() == []  # none was queued


def test_int8_2_4_job_compiled_with_onnxruntime(daemon, tmp_path):
    body = {**FAST_JOB, "dataset": _upload(daemon, 300), "epochs": 3, "sparsity": "2:4", "dense_reference": False,
            "quantize": "int8", "compile": "onnxruntime"}
    response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=body, timeout=30)
    assert response.status_code == 202, response.text
    job = wait_for(daemon.job(response.json()["id"]), lambda j: j["state"] in FINAL_STATES, timeout_s=240)
    assert job["state"] == "succeeded", job["error"]
    m = job["metrics"]
    assert job["config"]["adapt"]["quantize"] == "int8" and {"calibrate", "int8_ranges", "compile"} <= set(m["stage_seconds"])

    # INT8 accuracy next to float32 PyTorch on the same validation split, and the INT8 model's latency
    int8 = m["compile"]["int8"]
    assert int8["accuracy_int8"] == m["accuracy_compiled"] and int8["accuracy_fp32"] == m["compile"]["accuracy_pytorch_cpu"]
    assert abs(int8["accuracy_fp32"] - m["accuracy_after"]) <= 1 / m["val_samples"] + 1e-9
    assert m["compile"]["prediction_agreement"] >= 0.9
    assert m["latency"]["compiled"]["p50_ms"] > 0 and m["latency"]["compiled"]["batch_size"] == FAST_JOB["batch_size"]
    pruned = m["sparsity"]["pruned_layers"]
    assert int8["range_drift"]["layers"] == m["compile"]["report"]["details"]["int8"]["int8_layers"] >= len(pruned)

    # the stored QDQ file holds every pruned layer as int8 with the 2:4 pattern of the merged weights
    artifacts = {a["name"] for a in daemon.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert {"model.int8.onnx", "merged.safetensors"} <= artifacts
    files = {}
    for name in ("model.int8.onnx", "merged.safetensors"):
        files[name] = tmp_path / name
        files[name].write_bytes(daemon.get(f"/v1/jobs/{job['id']}/artifacts/{name}").content)
    merged = load_file(files["merged.safetensors"])
    check = check_qdq_2_4(files["model.int8.onnx"], {name: merged[name] for name in pruned})
    assert pruned and check.ok, check.problems

"""The README's "Use the adapted model elsewhere" snippet, run as written on a real job's artifacts: what a user
copies must work, and give the logits the daemon's task gives."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from daemon import AUTH, TEST_MODEL_DIR, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for
from tasks_helpers import artifact, predict

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippet() -> str:
    section = README.read_text().split("### Use the adapted model elsewhere", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the section has no python block"
    return found.group(1)


def test_the_readme_snippet_loads_a_jobs_merged_model_and_onnx(daemon: Daemon, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=30,
                        files={"file": ("digits.npz", digits_npz(200))})
    assert upload.status_code == 201, upload.text
    response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=30,
                          json={**FAST_JOB, "dataset": upload.json()["id"], "compile": "onnxruntime"})
    assert response.status_code == 202, response.text
    job = wait_for(daemon.job(response.json()["id"]), lambda j: j["state"] not in ("queued", "running"), 180)
    assert job["state"] == "succeeded", job["error"]

    (tmp_path / "job.json").write_text(json.dumps(job))
    for name in ("merged.safetensors", "model.onnx"):
        (tmp_path / name).write_bytes(artifact(daemon, job, name))
    images = np.load(io.BytesIO(digits_npz(8, seed=3)))["x"]  # (8, 28, 28) uint8, as a field device sends them
    np.savez(tmp_path / "images.npz", x=images)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TEST_MODEL_DIR))  # the job's user factory, importable as on its board
    scope: dict = {}
    exec(compile(_snippet(), "README.md", "exec"), scope)  # noqa: S102 - the README's own code, as a user runs it

    served = predict(daemon, job["metrics"]["task_id"], images, logits="true")
    assert served.status_code == 200, served.text
    np.testing.assert_allclose(np.array(served.json()["logits"]), scope["logits"].numpy(), atol=1e-4)
    assert scope["loaded"].info.name == job["model"]  # the snippet built the job's own model

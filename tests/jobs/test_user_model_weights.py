"""Bringing your own model through a real `edged serve`: a checkpoint that keeps its classifier is a 422 at
submit naming the keys and the fix, `drop_weight_keys` makes the job run, publish and predict, bad prefixes are
422s, and the daemon builds the factory once for all the submits that check it."""

from __future__ import annotations

import httpx
import numpy as np
import torch

from daemon import AUTH, Daemon
from edged_jobs_test_model import CALLS_FILE_VARIABLE, small_cnn
from jobs_helpers import FAST_JOB, digits_npz, wait_for
from tasks_helpers import predict

CHECKPOINT = "cnn_with_fc.pt"
SPEC = f"edged_jobs_test_model:counted_cnn={CHECKPOINT}"


def _save_checkpoint_with_classifier(daemon: Daemon) -> None:
    """The backbone's weights plus an ImageNet classifier, as EfficientNet checkpoints ship (`_fc.*`)."""
    models_dir = daemon.data_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    state = {**small_cnn().state_dict(), "_fc.weight": torch.zeros(1000, 64), "_fc.bias": torch.zeros(1000)}
    torch.save(state, models_dir / CHECKPOINT)


def _submit(daemon: Daemon, dataset: str, **fields) -> httpx.Response:
    return httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=60,
                      json={**FAST_JOB, "model": SPEC, "dataset": dataset, **fields})


def _reasons(response: httpx.Response) -> dict[str, dict]:
    assert response.status_code == 422, response.text
    return {reason["loc"][-1]: reason for reason in response.json()["error"]["detail"]}


def test_a_checkpoint_keeping_its_classifier_is_refused_at_submit_and_runs_with_drop_weight_keys(tmp_path):
    calls_file = tmp_path / "factory_calls"
    daemon = Daemon(tmp_path)
    daemon.start(environment={CALLS_FILE_VARIABLE: str(calls_file)})
    try:
        _save_checkpoint_with_classifier(daemon)
        upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=60,
                            files={"file": ("digits.npz", digits_npz(120))})
        assert upload.status_code == 201, upload.text
        dataset = upload.json()["id"]

        model = _reasons(_submit(daemon, dataset))["model"]
        assert "unexpected keys: 2" in model["msg"] and "set drop_weight_keys: ['_fc.']" in model["msg"]
        assert model["detail"] == {"unexpected": ["_fc.bias", "_fc.weight"]}

        no_match = _reasons(_submit(daemon, dataset, drop_weight_keys=["_fc.", "fc."]))["drop_weight_keys"]
        assert f"'fc.' matches no key of {CHECKPOINT}" in no_match["msg"]
        needed = _reasons(_submit(daemon, dataset, drop_weight_keys=["_fc.", "0."]))["drop_weight_keys"]
        assert "'0.' would drop 2 key(s) the backbone needs (0.bias, 0.weight)" in needed["msg"]

        accepted = _submit(daemon, dataset, drop_weight_keys=["_fc."])
        assert accepted.status_code == 202, accepted.text
        # Four submits checked the model; the daemon built the factory for the first only.
        assert calls_file.read_text().split().count(str(daemon.process.pid)) == 1

        job = wait_for(daemon.job(accepted.json()["id"]), lambda j: j["state"] in ("succeeded", "failed"), timeout_s=120)
        assert job["state"] == "succeeded", job
        assert job["config"]["model_options"]["drop_weight_keys"] == ["_fc."]
        task = daemon.get(f"/v1/tasks/{job['metrics']['task_id']}").json()
        assert task["model_options"]["drop_weight_keys"] == ["_fc."]  # the served base is loaded with it
        response = predict(daemon, task["id"], np.zeros((3, 28, 28), dtype=np.uint8))
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 3
    finally:
        daemon.stop()

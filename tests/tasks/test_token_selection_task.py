"""A text job with token selection (TR-PTS) through a real `edged serve`: it trains and publishes, its options
travel with the task, and the task predicts exactly what its merged model predicts with the same selection."""

from __future__ import annotations

import httpx
import torch

from daemon import AUTH
from jobs_helpers import TEXT_JOB, bbc_jsonl, wait_for
from tasks_helpers import merged_model, single_thread_logits
from edged.data.bundled import bbc_news
from edged.data.task import TaskData
from edged.jobs.states import FINAL_STATES

TOKENS = {"token_keep": 0.5, "token_layer": 0}  # max_length 16: each text keeps 8 tokens, the rest merged


def test_a_text_task_with_token_selection_predicts_like_its_merged_model(daemon):
    upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, files={"file": ("bbc.jsonl", bbc_jsonl(48))},
                        timeout=60)
    assert upload.status_code == 201, upload.text
    response = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=60,
                          json={**TEXT_JOB, "method": "taskedge", **TOKENS, "dataset": upload.json()["id"]})
    assert response.status_code == 202, response.text
    job = wait_for(daemon.job(response.json()["id"]), lambda j: j["state"] in FINAL_STATES, timeout_s=240)
    assert job["state"] == "succeeded", job["error"]
    assert job["config"]["model_options"] == {"max_length": 16, **TOKENS}
    task = daemon.get(f"/v1/tasks/{job['metrics']['task_id']}").json()
    assert task["model_options"] == job["config"]["model_options"]  # the task rebuilds its base with them

    texts = [text[:300] for text in bbc_news().x[-3:]]  # type: ignore[index]  # articles no job trained on
    served = httpx.post(f"{daemon.url}/v1/tasks/{task['id']}/predict", headers=AUTH, params={"logits": "true"},
                        json={"texts": texts}, timeout=60)
    assert served.status_code == 200, served.text
    logits = torch.tensor(served.json()["logits"])

    loaded = merged_model(daemon, job)
    assert loaded.model.backbone.selection is not None
    inputs = loaded.preprocess(TaskData("text", texts, torch.zeros(3, dtype=torch.int64), task["classes"],
                                        labelled=False))
    assert torch.equal(logits, single_thread_logits(loaded.model, inputs))  # bit for bit, CPU fp32
    loaded.model.backbone.selection = None  # the same weights with every token: the task did select
    assert not torch.allclose(logits, single_thread_logits(loaded.model, inputs), atol=1e-4)

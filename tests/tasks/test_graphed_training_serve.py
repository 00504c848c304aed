"""A text job through a real `edged serve` on a CUDA GPU: its training steps replay from a CUDA graph, it learns,
and its published task answers predicts. GPU only (CPU jobs have no graphs: tests/train/test_graphed_step.py)."""

from __future__ import annotations

import httpx
import pytest
import torch

from daemon import AUTH, Daemon
from jobs_helpers import TEXT_JOB, bbc_jsonl, wait_for
from edged.data.bundled import bbc_news
from edged.jobs.states import FINAL_STATES
from edged.train.graphed_step import MIN_FULL_STEPS, WARM_UP

ARTICLES, BATCH = 400, 16  # 320 to train on: 20 full batches, enough for the warm-up and a capture to repay


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_a_served_text_job_trains_from_a_cuda_graph_learns_and_predicts(tmp_path):
    assert ARTICLES * 4 // 5 // BATCH >= max(MIN_FULL_STEPS, WARM_UP + 1)
    daemon = Daemon(tmp_path, {"EDGED_DEVICE": "cuda"})
    daemon.start()
    try:
        upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                            files={"file": ("bbc.jsonl", bbc_jsonl(ARTICLES))}, timeout=60)
        assert upload.status_code == 201, upload.text
        spec = {**TEXT_JOB, "method": "taskedge", "batch_size": BATCH, "max_length": 64, "dataset": upload.json()["id"]}
        created = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, json=spec, timeout=60)
        assert created.status_code == 202, created.text
        job = wait_for(daemon.job(created.json()["id"]), lambda j: j["state"] in FINAL_STATES, timeout_s=300)
        assert job["state"] == "succeeded", job
        metrics = job["metrics"]
        assert metrics["device"].startswith("cuda") and metrics["train_cuda_graph"] == "captured", metrics
        assert metrics["accuracy_after"] >= 0.6, metrics  # 5 classes: chance is 0.2
        texts = [text[:300] for text in bbc_news().x[-4:]]  # type: ignore[index]
        answer = httpx.post(f"{daemon.url}/v1/tasks/{metrics['task_id']}/predict", headers=AUTH,
                            json={"texts": texts}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == len(texts)
    finally:
        daemon.stop()

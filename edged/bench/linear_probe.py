"""An independent linear probe for `edged bench adapt`: what the head-only row should reach.

The same split as the adaptation (the task's own stratified split, same fraction and seed), features from
the same frozen backbone computed by plain torch code (eval mode, no edged training code), and
scikit-learn's LogisticRegression (standardised features, its default C=1, lbfgs) fitted on them; the
accuracy is on the same validation split.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from edged.data.task import TaskData
from edged.devices import resolve_device
from edged.models.loader import load_model
from edged.pipeline.config import AdaptConfig

ROW_LABEL = "linear probe (sklearn)"


@torch.no_grad()
def backbone_features(backbone: nn.Module, inputs: Any, batch_size: int, device: torch.device) -> np.ndarray:
    """(N, D) float32 features: `backbone` in eval mode over tensor or dict-of-tensor inputs, in batches."""
    backbone.eval().to(device)
    count = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    parts: list[Tensor] = []
    for start in range(0, count, batch_size):
        if isinstance(inputs, dict):
            batch = {key: value[start:start + batch_size].to(device) for key, value in inputs.items()}
        else:
            batch = inputs[start:start + batch_size].to(device)
        parts.append(backbone(batch).float().cpu())
    return torch.cat(parts).numpy()


def linear_probe_row(model_name: str, model_options: dict[str, Any], task: TaskData, base: dict[str, Any]) -> dict:
    """The probe's row of the adaptation table, for `task` split as an adaptation with settings `base` splits it."""
    started = time.perf_counter()
    config = AdaptConfig(method="head", **base)
    loaded = load_model(model_name, len(task.classes), seed=config.seed, **model_options)
    device = resolve_device(config.device)
    train_task, val_task = task.split(config.val_fraction, config.seed)
    batch = max(config.batch_size, 64)
    train_x = backbone_features(loaded.model.backbone, loaded.preprocess(train_task), batch, device)
    val_x = backbone_features(loaded.model.backbone, loaded.preprocess(val_task), batch, device)
    fit_started = time.perf_counter()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_task.y.numpy())
    fit_s = time.perf_counter() - fit_started
    return {"row": ROW_LABEL, "method": "sklearn", "accuracy": float(probe.score(val_x, val_task.y.numpy())),
            "trainable": 0, "trainable_pct": 0.0, "head_params": None, "peak_memory_mb": None,
            "wall_s": time.perf_counter() - started, "train_s": fit_s,
            "samples_per_s": len(train_task) / max(fit_s, 1e-9)}

"""BatchNorm running statistics re-estimated on the task data after training, kept only where they do not
score worse on training samples than the statistics training left.

Why: a method that trains with the BatchNorm layers in train mode (full fine-tuning, BatchNorm + head) learns
its weights under batch statistics, while the running statistics evaluation uses are an exponential average
that trails them, badly so with a small momentum (0.01: ~100 steps to forget the pre-training data). The
check keeps a run from ever losing to the statistics training left. (Methods that train under frozen
statistics keep those: `edged.pipeline.adapt_stages.reestimates_batchnorm` says why.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from edged.sparse.nm import recalibrate_batchnorm_


@dataclass
class BatchNormReestimate:
    samples: int  # task samples the statistics were re-estimated on
    layers: int
    kept: bool  # the re-estimated statistics stayed in the model
    accuracy_stale: float  # on those samples, with the statistics training left
    accuracy_reestimated: float
    buffers: list[str] = field(default_factory=list)  # state-dict names of the buffers re-estimated

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "layers": self.layers, "kept": self.kept,
                "train_accuracy_stale": self.accuracy_stale, "train_accuracy_reestimated": self.accuracy_reestimated}


def _norm_buffers(model: nn.Module) -> dict[str, Tensor]:
    return {f"{name}.{key}": buffer.detach().clone()
            for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for key, buffer in module.named_buffers(recurse=False)}


def reestimate_batchnorm_(model: nn.Module, batches: Iterable[tuple[Any, Tensor]], samples: int,
                          score: Callable[[], float]) -> BatchNormReestimate:
    """Re-estimate every BatchNorm's running statistics of `model` over `batches` (a cumulative average, no
    weight changes) and keep them unless `score()` (accuracy on training samples) is lower than with the
    statistics before, which are then put back."""
    stale = _norm_buffers(model)
    accuracy_stale = score()
    buffers = recalibrate_batchnorm_(model, batches)
    accuracy_reestimated = score()
    kept = accuracy_reestimated >= accuracy_stale
    if not kept:
        state = dict(model.named_buffers())
        with torch.no_grad():
            for name, value in stale.items():
                state[name].copy_(value)
    return BatchNormReestimate(samples, len(buffers) // 3, kept, accuracy_stale, accuracy_reestimated, buffers)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())

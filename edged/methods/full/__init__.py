"""Full fine-tuning: every backbone parameter trains (the upper bound, and the memory ceiling)."""

from __future__ import annotations

from torch import nn

from edged.adapt.config import AdaptConfig
from edged.methods.base import Adaptation, TaskBatches
from edged.methods.dense_parts import dense_adaptation
from edged.methods.registry import register_adapter


@register_adapter("full", "full fine-tuning of every backbone parameter", default_lr=1e-4)
def prepare(model: nn.Module, batches: TaskBatches, config: AdaptConfig) -> Adaptation:
    return dense_adaptation("full", model, lambda name, p: True, train_norm_layers=True)

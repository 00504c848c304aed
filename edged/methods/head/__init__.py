"""Head only (linear probe): the backbone stays frozen, only the classification head trains."""

from __future__ import annotations

from torch import nn

from edged.adapt.config import AdaptConfig
from edged.methods.base import Adaptation, TaskBatches
from edged.methods.dense_parts import dense_adaptation
from edged.methods.registry import register_adapter


@register_adapter("head", "head only: a linear probe on frozen features")
def prepare(model: nn.Module, batches: TaskBatches, config: AdaptConfig) -> Adaptation:
    return dense_adaptation("head", model, lambda name, p: False, train_norm_layers=False)

"""Magnitude baseline: S_ij = |W_ij| (task-agnostic)."""

from __future__ import annotations

from torch import Tensor, nn

from edged.methods.base import ScoreConfig, TaskBatches, backbone_layers
from edged.methods.registry import register_scorer


@register_scorer("magnitude", "|W|: weight magnitude, ignores the task")
def score(model: nn.Module, batches: TaskBatches, config: ScoreConfig) -> dict[str, Tensor]:
    return {name: layer.weight.detach().float().abs() for name, layer in backbone_layers(model).items()}

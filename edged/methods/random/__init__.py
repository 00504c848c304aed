"""Random baseline: uniform scores from a generator seeded by the job's seed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edged.methods.base import ScoreConfig, TaskBatches, backbone_layers
from edged.methods.registry import register_scorer


@register_scorer("random", "random entries (seeded): the control every method must beat")
def score(model: nn.Module, batches: TaskBatches, config: ScoreConfig) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(config.seed)
    return {
        name: torch.rand(layer.weight.shape, generator=generator)
        for name, layer in backbone_layers(model).items()
    }

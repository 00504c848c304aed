"""TASO (arXiv 2509.17688): S_ij = |W_ij * dL/dW_ij| with the gradient accumulated over the task data."""

from __future__ import annotations

from torch import Tensor, nn

from edged.methods.base import ScoreConfig, TaskBatches, backbone_layers
from edged.methods.gradients import weight_gradients
from edged.methods.registry import register_scorer


@register_scorer("taso", "TASO: |W x dL/dW| over the task data (first-order loss change)", needs_gradients=True)
def score(model: nn.Module, batches: TaskBatches, config: ScoreConfig) -> dict[str, Tensor]:
    total: dict[str, Tensor] = {}
    for grads in weight_gradients(model, batches):
        for name, g in grads.items():
            total[name] = total[name] + g if name in total else g
    layers = backbone_layers(model)
    return {name: (layers[name].weight.detach().float() * g).abs() for name, g in total.items()}

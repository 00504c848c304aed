"""TaskEdge (arXiv 2504.03718): S_ij = |W_ij| * ||X_j||_2 from a calibration pass on the task's data."""

from __future__ import annotations

from torch import Tensor, nn

from edged.calibrate import calibrate, norm_like_weight
from edged.methods.base import ScoreConfig, TaskBatches, backbone_layers
from edged.methods.registry import register_scorer


@register_scorer("taskedge", "TaskEdge: |W| x input-feature L2 norm over the task data (one forward pass)")
def score(model: nn.Module, batches: TaskBatches, config: ScoreConfig) -> dict[str, Tensor]:
    layers = backbone_layers(model)
    calibration = config.calibration
    if calibration is None:
        calibration = calibrate(model, batches.inputs, layers, config.memory_budget_mb, device=batches.device)
    return {
        name: layer.weight.detach().float().abs() * norm_like_weight(layer, calibration.norms[name])
        for name, layer in layers.items()
    }

"""TaskEdge (arXiv 2504.03718): S_ij = |W_ij| * ||X_j||_2 from a calibration pass on the task's data.

The same score is Wanda's pruning metric, so the 2:4 pruning stage uses `importance` too.
"""

from __future__ import annotations

from torch import Tensor, nn

from edged.calibrate import CalibrationResult, calibrate, norm_like_weight
from edged.methods.base import ScoreConfig, TaskBatches, backbone_layers
from edged.methods.registry import register_scorer


def importance(model: nn.Module, calibration: CalibrationResult) -> dict[str, Tensor]:
    """|W| * ||X_j||_2 for every backbone Linear/Conv2d, shaped like each weight."""
    return {
        name: layer.weight.detach().float().abs() * norm_like_weight(layer, calibration.norms[name])
        for name, layer in backbone_layers(model).items()
    }


@register_scorer("taskedge", "TaskEdge: |W| x input-feature L2 norm over the task data (one forward pass)",
                 needs_calibration=True)
def score(model: nn.Module, batches: TaskBatches, config: ScoreConfig) -> dict[str, Tensor]:
    calibration = config.calibration
    if calibration is None:
        calibration = calibrate(model, batches.inputs, backbone_layers(model), config.memory_budget_mb, device=batches.device)
    return importance(model, calibration)

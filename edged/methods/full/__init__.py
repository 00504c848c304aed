"""Full fine-tuning: every backbone parameter trains (the upper bound, and the memory ceiling)."""

from __future__ import annotations

from typing import Optional

from torch import nn

from edged.calibrate import CalibrationResult
from edged.methods.base import Adaptation, TaskBatches
from edged.methods.dense_parts import dense_adaptation
from edged.methods.options import MethodOptions
from edged.methods.registry import register_adapter


@register_adapter("full", "full fine-tuning of every backbone parameter", default_lr=1e-4)
def prepare(model: nn.Module, batches: TaskBatches, options: MethodOptions,
            calibration: Optional[CalibrationResult]) -> Adaptation:
    return dense_adaptation("full", model, lambda name, p: True, train_norm_layers=True)

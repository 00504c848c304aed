"""Head only (linear probe): the backbone stays frozen, only the classification head trains."""

from __future__ import annotations

from typing import Optional

from torch import nn

from edged.calibrate import CalibrationResult
from edged.methods.base import Adaptation, TaskBatches
from edged.methods.dense_parts import dense_adaptation
from edged.methods.options import MethodOptions
from edged.methods.registry import register_adapter


@register_adapter("head", "head only: a linear probe on frozen features", keeps_2_4=True, trains_backbone=False)
def prepare(model: nn.Module, batches: TaskBatches, options: MethodOptions,
            calibration: Optional[CalibrationResult]) -> Adaptation:
    return dense_adaptation("head", model, lambda name, p: False, train_norm_layers=False)

"""Normalisation layers + biases + head (BitFit-style), with BatchNorm statistics re-estimated on the task."""

from __future__ import annotations

from typing import Optional

from torch import nn

from edged.calibrate import CalibrationResult
from edged.methods.base import Adaptation, TaskBatches
from edged.methods.dense_parts import dense_adaptation, norm_and_bias_names
from edged.methods.options import MethodOptions
from edged.methods.registry import register_adapter


@register_adapter("bn_bias", "BatchNorm/LayerNorm parameters and all biases, plus the head", keeps_2_4=True, default_lr=1e-3)
def prepare(model: nn.Module, batches: TaskBatches, options: MethodOptions,
            calibration: Optional[CalibrationResult]) -> Adaptation:
    names = norm_and_bias_names(getattr(model, "backbone", model))
    return dense_adaptation("bn_bias", model, lambda name, p: name in names, train_norm_layers=True)

"""TASO sparse LoRA (arXiv 2509.17688): LoRA on each layer's task "core" rows x columns.

Row and column importance are the sums of |W * dL/dW| along the other axis. Each layer gets a share of
the parameter budget in proportion to its size; with rank r it holds r * (rows + cols) parameters,
rows and cols split in proportion to the layer's shape.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from edged.calibrate import CalibrationResult
from edged.methods.base import Adaptation, ScoreConfig, TaskBatches, backbone_layers, freeze_, lowrank_adaptation
from edged.methods.options import LowRankOptions
from edged.methods.registry import register_adapter
from edged.methods.taso import score as taso_score
from edged.sparse.layers import count_weights
from edged.sparse.lowrank import LowRankDelta, attach_lowrank_
from edged.sparse.masks import budget_to_count


def _core(importance: Tensor, count: int) -> Tensor:
    """Indices of the `count` largest entries, in increasing index order (ties by lower index)."""
    return torch.sort(importance.double(), descending=True, stable=True).indices[:count].sort().values


def core_sizes(shapes: dict[str, tuple[int, int]], budget: int, rank: int) -> dict[str, tuple[int, int]]:
    """Rows and columns of each layer's core, from the layers' (out, fan_in) shapes alone.

    A layer's share of `budget` entries is in proportion to its size; at rank r its core holds
    r * (rows + cols) of them, rows and cols in proportion to its shape. Layers too small for one row
    and one column are left out. Depends on no scores, so a parameter count can be matched before scoring.
    """
    total = sum(out * fan_in for out, fan_in in shapes.values())
    sizes = {}
    for name, (out, fan_in) in shapes.items():
        share = budget * out * fan_in / total / rank  # rows + cols this layer may hold
        n_rows = min(out, math.floor(share * out / (out + fan_in)))
        n_cols = min(fan_in, math.floor(share * fan_in / (out + fan_in)))
        if n_rows >= 1 and n_cols >= 1:
            sizes[name] = (n_rows, n_cols)
    return sizes


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(out, fan_in) of each backbone Linear/Conv2d weight: what `core_sizes` reads."""
    return {name: (layer.weight.shape[0], layer.weight[0].numel()) for name, layer in backbone_layers(model).items()}


# Its default rank is 1: at a fixed entry count a higher rank leaves fewer, smaller cores, and at LoRA r=1's count
# on MobileNetV2 (3 seeds, README) ranks 8 / 4 / 2 / 1 gave 94.2 / 94.9 / 95.1 / 96.3 % on MNIST-5k, 95.7 / 97.0 /
# 97.4 / 97.5 % on the digits.
DEFAULT_RANK = 1


# Its default rate is 16 x LoRA's: at LoRA r=1's entry count on MobileNetV2 (3 epochs, 3 seeds, README) the rates
# searched around 1e-3 gave 92.0 % on MNIST-5k and 94.8 % on the digits, around 4e-3 93.5 / 95.8, around 1.6e-2
# 94.2 / 95.7; around 6.4e-2 two of three digits seeds diverged.
@register_adapter("taso_lora", "TASO sparse LoRA on importance-chosen core rows and columns, rank lora_rank",
                  options=LowRankOptions, default_lr=1.6e-2)
def prepare(model: nn.Module, batches: TaskBatches, options: LowRankOptions,
            calibration: Optional[CalibrationResult]) -> Adaptation:
    scores = taso_score(model, batches, ScoreConfig(seed=options.seed))
    freeze_(model)
    layers = backbone_layers(model)
    budget = budget_to_count(options.budget, count_weights(layers))
    generator = torch.Generator().manual_seed(options.seed)
    deltas = {}
    rank = options.rank(DEFAULT_RANK)
    for name, (n_rows, n_cols) in core_sizes(layer_shapes(model), budget, rank).items():
        s = scores[name].reshape(scores[name].shape[0], -1)  # (out, fan_in)
        rows, cols = _core(s.sum(1), n_rows), _core(s.sum(0), n_cols)
        deltas[name] = LowRankDelta(layers[name].weight, rank, rows=rows, cols=cols, generator=generator)
        attach_lowrank_(layers[name], deltas[name])
    return lowrank_adaptation("taso_lora", model, deltas)

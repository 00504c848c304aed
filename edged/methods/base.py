"""What every method works with: the task batches, the scoring config, and the Adaptation it prepares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from edged.calibrate import CalibrationResult
from edged.data.task import Inputs, batches, to_device
from edged.sparse.layers import WeightLayer, weight_layers
from edged.sparse.lowrank import merge_lowrank_, support_indices


@dataclass
class TaskBatches:
    """Model-ready task data (on CPU) and how to iterate it on a device."""

    inputs: Inputs
    labels: Tensor  # (N,) int64
    batch_size: int = 32
    device: torch.device = torch.device("cpu")

    def __iter__(self) -> Iterator[tuple[Inputs, Tensor]]:
        for x, y in batches(self.inputs, self.labels, self.batch_size):
            yield to_device(x, self.device), y.to(self.device)


@dataclass
class ScoreConfig:
    seed: int = 0
    memory_budget_mb: Optional[float] = None
    calibration: Optional[CalibrationResult] = None  # a pass already made (shared with 2:4 pruning)


@dataclass
class Adaptation:
    """The trainable part of a model prepared by a method.

    parameters: backbone tensors the optimizer updates (the head is always trained in addition).
    entries: how many backbone weight entries those tensors can change (the budget actually used).
    changed: backbone state-dict names the method may change -> flat indices changed (None: whole tensor).
    merge_: folds the adaptation into plain dense layers in place (the model is then an ordinary model).
    train_norm_layers: BatchNorm layers run in train mode (their statistics change) during training.
    """

    method: str
    parameters: list[nn.Parameter]
    entries: int
    changed: dict[str, Optional[Tensor]]
    merge_: Callable[[], object]  # its return value, if any, is not used
    train_norm_layers: bool = False
    info: dict = field(default_factory=dict)


def backbone_layers(model: nn.Module) -> dict[str, WeightLayer]:
    """The Linear/Conv2d layers edged adapts: the backbone's, named as in the whole model."""
    backbone = getattr(model, "backbone", None)
    return weight_layers(backbone, "backbone.") if backbone is not None else weight_layers(model)


def freeze_(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def lowrank_adaptation(method: str, model: nn.Module, deltas: dict, **info: object) -> Adaptation:
    """The Adaptation of low-rank deltas already attached to `model`'s layers (masked or TASO LoRA)."""
    params = [p for d in deltas.values() for p in (d.A, d.B)]
    return Adaptation(
        method=method,
        parameters=params,
        entries=sum(p.numel() for p in params),
        changed={name: support_indices(d) for name, d in deltas.items()},
        merge_=lambda: merge_lowrank_(model),
        info={"layers": len(deltas), **info},
    )

"""What every compile backend returns, and the per-layer 2:4 census they all start from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from edged.errors import InvalidInput
from edged.compile.inputs import ModelInputs
from edged.sparse.layers import PRUNABLE_TYPES, WeightLayer
from edged.sparse.nm import check_2_4, nm_ineligible_reason


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where the submodule `name` (dotted) of `model` is (nn.Module.set_submodule is torch >= 2.5)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@dataclass
class CompileReport:
    """Which layers run sparse kernels and which run dense, each with the reason."""

    backend: str
    sparse: dict[str, str] = field(default_factory=dict)  # weight name -> how (kernel, alg, timing)
    dense: dict[str, str] = field(default_factory=dict)  # weight name -> why not sparse
    details: dict[str, Any] = field(default_factory=dict)  # backend extras (pattern check, logs)

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "sparse": self.sparse, "dense": self.dense, "details": self.details}


@dataclass
class CompiledModel:
    """A saved artifact plus `predict(inputs) -> logits` (CPU float32) to re-measure accuracy."""

    backend: str
    artifact: Path
    predict: Callable[[ModelInputs], Tensor]
    report: CompileReport


def two_four_layers(model: nn.Module) -> tuple[dict[str, WeightLayer], dict[str, str]]:
    """Split the model's Linear/Conv2d layers into those whose weights hold the 2:4 pattern
    ({weight name: layer}) and the others ({weight name: why they are dense})."""
    sparse: dict[str, WeightLayer] = {}
    dense: dict[str, str] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, PRUNABLE_TYPES):
            continue
        key = f"{name}.weight" if name else "weight"
        reason = nm_ineligible_reason(layer)
        if reason is None and not check_2_4(layer.weight):
            reason = "weights do not hold the 2:4 pattern (layer was not pruned)"
        if reason is None:
            sparse[key] = layer
        else:
            dense[key] = reason
    return sparse, dense


def require_cpu(model: nn.Module) -> None:
    """The pipeline hands over the merged model on the CPU; backends make their own device copies."""
    for name, param in model.named_parameters():
        if param.device.type != "cpu":
            raise InvalidInput(
                f"compile expects the model on the CPU; {name!r} is on {param.device}",
                detail={"accepted": "model.cpu() before compile_model(...)"},
            )

"""Adaptations that train whole tensors of the backbone (head only, BatchNorm + biases, full)."""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn

from edged.methods.base import Adaptation, freeze_

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def dense_adaptation(
    method: str, model: nn.Module, chosen: Callable[[str, nn.Parameter], bool], train_norm_layers: bool
) -> Adaptation:
    """Train the backbone parameters for which `chosen(name, param)` holds, densely."""
    freeze_(model)
    backbone = getattr(model, "backbone", model)
    prefix = "backbone." if backbone is not model else ""
    params = {f"{prefix}{name}": p for name, p in backbone.named_parameters() if chosen(name, p)}
    for p in params.values():
        p.requires_grad_(True)
    changed: dict[str, Optional[Tensor]] = {name: None for name in params}
    if train_norm_layers:  # running statistics (and their batch count) change too, so they belong to the delta
        changed.update({f"{prefix}{name}": None for name, _ in backbone.named_buffers()
                        if "running_" in name or name.endswith("num_batches_tracked")})
    return Adaptation(
        method=method,
        parameters=list(params.values()),
        entries=sum(p.numel() for p in params.values()),
        changed=changed,
        merge_=lambda: None,
        train_norm_layers=train_norm_layers,
    )


def norm_and_bias_names(backbone: nn.Module) -> set[str]:
    names = {name for name, _ in backbone.named_parameters() if name.endswith("bias")}
    for module_name, module in backbone.named_modules():
        if isinstance(module, NORM_TYPES):
            names.update(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return names

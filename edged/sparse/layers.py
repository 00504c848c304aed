"""Which layers of a model edged scores, masks and trains: every Linear and Conv2d weight."""

from __future__ import annotations

from typing import Union

from torch import nn

from edged.errors import InvalidInput

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)
WeightLayer = Union[nn.Linear, nn.Conv2d]  # a layer whose `.weight` edged scores, masks and trains


def weight_layers(module: nn.Module, prefix: str = "") -> dict[str, WeightLayer]:
    """Linear and Conv2d layers of `module`, keyed by the full name of their weight parameter.

    `prefix` is prepended to names so that names computed on a backbone match
    `model.named_parameters()` of the model that holds it (e.g. prefix="backbone.").
    Raises InvalidInput if there is none: such a model has nothing edged can adapt.
    """
    layers: dict[str, WeightLayer] = {
        f"{prefix}{name}.weight" if name else f"{prefix}weight": layer
        for name, layer in module.named_modules()
        if isinstance(layer, PRUNABLE_TYPES)
    }
    if not layers:
        raise InvalidInput(
            f"model {type(module).__name__} has no Linear or Conv2d layers",
            detail={"accepted": "a model with at least one torch.nn.Linear or torch.nn.Conv2d layer"},
        )
    return layers


def count_weights(layers: dict[str, WeightLayer]) -> int:
    """Total number of weight entries in the given layers (the denominator of every budget)."""
    return sum(layer.weight.numel() for layer in layers.values())

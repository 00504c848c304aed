"""The one way the calibration pass watches layers: forward hooks that hand each layer's input to a collector,
installed for the length of a `with` block so the model is left as it was."""

from __future__ import annotations

from typing import Any, TypeVar

from torch import Tensor, nn

from edged.sparse.layers import WeightLayer

Collector = TypeVar("Collector", bound="InputCollector")


class InputCollector:
    """Context manager: while active, every forward of `layers` calls `add(name, layer, its input)`."""

    def __init__(self, layers: dict[str, WeightLayer]) -> None:
        self.layers = layers
        self._handles: list[Any] = []

    def add(self, name: str, layer: nn.Module, x: Tensor) -> None:
        raise NotImplementedError

    def __enter__(self: Collector) -> Collector:
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(layer: nn.Module, args: tuple, output: Tensor) -> None:
            self.add(name, layer, args[0])

        return hook

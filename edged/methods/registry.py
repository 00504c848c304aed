"""The one registry of adaptation methods. Each method package registers itself next to its code.

Two kinds:
- "sparse": an importance scorer, `score(model, batches, config) -> {weight name: tensor shaped like it}`;
  edged masks the scores to the budget and trains the chosen entries as sparse deltas.
- "adapter": a baseline or adapter, `prepare(model, batches, config) -> Adaptation` (head only, LoRA, ...).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Literal

from edged.errors import InvalidInput

MethodKind = Literal["sparse", "adapter"]


@dataclass(frozen=True)
class MethodEntry:
    name: str
    kind: MethodKind
    description: str
    function: Callable  # score(...) for "sparse", prepare(...) for "adapter"
    needs_gradients: bool = False  # scoring runs backward passes (more memory than calibration)
    default_lr: float = 1e-3


_METHODS: dict[str, MethodEntry] = {}
_ALL_IMPORTED = False


def _register(entry: MethodEntry) -> None:
    if entry.name in _METHODS:
        raise ValueError(f"method {entry.name!r} registered twice")
    _METHODS[entry.name] = entry


def register_scorer(name: str, description: str, needs_gradients: bool = False, default_lr: float = 5e-3):
    """Decorator: register `score(model, batches, config)` as sparse method `name`."""

    def decorate(fn: Callable) -> Callable:
        _register(MethodEntry(name, "sparse", description, fn, needs_gradients, default_lr))
        return fn

    return decorate


def register_adapter(name: str, description: str, default_lr: float = 1e-3):
    """Decorator: register `prepare(model, batches, config) -> Adaptation` as method `name`."""

    def decorate(fn: Callable) -> Callable:
        _register(MethodEntry(name, "adapter", description, fn, default_lr=default_lr))
        return fn

    return decorate


def _load_all() -> None:
    """Import every subpackage of edged.methods once, so each registers itself."""
    import edged.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.ispkg:
            importlib.import_module(f"{package.__name__}.{module.name}")


def all_methods() -> dict[str, MethodEntry]:
    global _ALL_IMPORTED
    if not _ALL_IMPORTED:  # a package imported directly registers only itself: import the rest once
        _load_all()
        _ALL_IMPORTED = True
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> MethodEntry:
    methods = all_methods()
    if name not in methods:
        raise InvalidInput(f"unknown method {name!r}", detail={"accepted": sorted(methods)})
    return methods[name]

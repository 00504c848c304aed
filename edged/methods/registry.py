"""The one registry of adaptation methods. Each method package registers itself next to its code, with its
options class and what it can do; nothing outside this registry branches on a method's name.

Two kinds:
- "sparse": an importance scorer, `score(model, batches, config: ScoreConfig) -> {weight name: tensor shaped
  like it}`; edged masks the scores to the budget (`MaskOptions`) and trains the chosen entries as sparse deltas.
- "adapter": a baseline or adapter, `prepare(model, batches, options, calibration) -> Adaptation` (head only,
  LoRA, ...), with `options` an instance of its registered options class and `calibration` the job's
  calibration pass when the method `needs_calibration`, else None.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel

from edged.errors import InvalidInput
from edged.methods.options import MaskOptions, MethodOptions

MethodKind = Literal["sparse", "adapter"]


@dataclass(frozen=True)
class MethodEntry:
    name: str
    kind: MethodKind
    description: str
    function: Callable  # score(...) for "sparse", prepare(...) for "adapter"
    options: type[MethodOptions]  # the options it reads, picked out of the job's config
    keeps_2_4: bool  # its updates keep a 2:4-pruned backbone 2:4 (so `sparsity: "2:4"` may use it)
    needs_calibration: bool = False  # reads the calibration pass (input-feature norms)
    needs_gradients: bool = False  # scoring runs backward passes (more memory than calibration)
    default_lr: float = 1e-3
    trains_backbone: bool = True  # false: only the head trains, so a backbone `lr` would be ignored

    def options_for(self, config: BaseModel) -> MethodOptions:
        """This method's options, picked out of a config holding them (the job's AdaptConfig)."""
        return self.options.model_validate(config.model_dump())


_METHODS: dict[str, MethodEntry] = {}
_ALL_IMPORTED = False


def _register(entry: MethodEntry) -> None:
    if entry.name in _METHODS:
        raise ValueError(f"method {entry.name!r} registered twice")
    _METHODS[entry.name] = entry


def register_scorer(name: str, description: str, needs_gradients: bool = False, needs_calibration: bool = False,
                    default_lr: float = 2e-2):
    """Decorator: register `score(model, batches, config)` as sparse method `name`. Its deltas are masked
    inside the kept positions, so it keeps a 2:4 pattern. Its default rate is high for fine-tuning: with the
    budget shared by score mass, 0.1 % of MobileNetV2 trained best at 0.02 of those tried (README, "Sparse
    adaptation vs the baselines"); the automatic search tries it and 1/4 of it."""

    def decorate(fn: Callable) -> Callable:
        _register(MethodEntry(name, "sparse", description, fn, MaskOptions, keeps_2_4=True,
                              needs_calibration=needs_calibration, needs_gradients=needs_gradients, default_lr=default_lr))
        return fn

    return decorate


def register_adapter(name: str, description: str, options: type[MethodOptions] = MethodOptions, keeps_2_4: bool = False,
                     needs_calibration: bool = False, default_lr: float = 1e-3, trains_backbone: bool = True):
    """Decorator: register `prepare(model, batches, options, calibration) -> Adaptation` as method `name`.
    `keeps_2_4`: it leaves every Linear/Conv2d weight alone (norms, biases, the head)."""

    def decorate(fn: Callable) -> Callable:
        _register(MethodEntry(name, "adapter", description, fn, options, keeps_2_4=keeps_2_4,
                              needs_calibration=needs_calibration, default_lr=default_lr,
                              trains_backbone=trains_backbone))
        return fn

    return decorate


def _load_all() -> None:
    """Import every subpackage of edged.methods once, so each registers itself."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.ispkg:
            importlib.import_module(f"{__package__}.{module.name}")


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


def methods_keeping_2_4() -> list[str]:
    return [name for name, entry in all_methods().items() if entry.keeps_2_4]

"""The base-model registry: built-in backbones register themselves here, next to their code.

A builder `build(options) -> Backbone` is registered with `@register(name, kind=..., ...)`;
`list_models()` describes every registered model and whether it can be loaded on this machine.
Loading by spec (registered names, user factories, transformers directories) is `edged.models.loader`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, Field
from torch import nn

from edged.data.task import Inputs, Kind, TaskData
from edged.errors import InvalidInput, Unavailable
from edged.models.sources import ModelSources


OptionValue = Union[int, float]  # an integer option, or a number where the default is a float (token_keep)
Options = Mapping[str, OptionValue]


@dataclass
class Backbone:
    """What a model builder returns: the feature extractor and how to feed it."""

    module: nn.Module  # inputs -> (N, feature_dim)
    feature_dim: int
    preprocess: Callable[[TaskData], Inputs]


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Kind
    description: str
    input: str
    options: Options  # accepted options and their defaults
    requires: Mapping[str, str]  # importable module -> pip package providing it
    count_params: Callable[[], int]  # backbone parameter count, without loading weights
    build: Callable[[Options], Backbone]


class ModelInfo(BaseModel):
    name: str = Field(description="registry name, transformers directory or module:factory spec")
    kind: Kind = Field(description="the inputs the model takes: image, text or tabular")
    description: str = Field(description="what the model is")
    params: Optional[int] = Field(default=None, description="backbone parameter count (head excluded)")
    input: str = Field(description="what inputs the model takes and how they are preprocessed")
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="model options (image_size, max_length, token_keep, token_layer): defaults when listed, values "
        "used when loaded",
    )
    available: bool = Field(default=True, description="whether the packages this model needs are installed")
    reason: Optional[str] = Field(default=None, description="why the model is unavailable, with the fix")


_ENTRIES: dict[str, Entry] = {}


def register(
    name: str,
    *,
    kind: Kind,
    description: str,
    input: str,
    options: Options,
    requires: Mapping[str, str],
    count_params: Callable[[], int],
) -> Callable[[Callable[[Options], Backbone]], Callable[[Options], Backbone]]:
    """Decorator registering a builder `build(options) -> Backbone` under `name`."""

    def decorate(build: Callable[[Options], Backbone]) -> Callable[[Options], Backbone]:
        if name in _ENTRIES:
            raise ValueError(f"model {name!r} is registered twice")
        counted_once = functools.lru_cache(maxsize=1)(count_params)  # counting may build a model: do it once
        _ENTRIES[name] = Entry(name, kind, description, input, dict(options), dict(requires), counted_once, build)
        return build

    return decorate


def registered_names() -> list[str]:
    return sorted(_ENTRIES)


def _missing_packages(entry: Entry) -> list[str]:
    return [pip for module, pip in entry.requires.items() if importlib.util.find_spec(module) is None]


def _entry_info(entry: Entry) -> ModelInfo:
    missing = _missing_packages(entry)
    reason = f"missing package(s); install with: pip install {' '.join(missing)}" if missing else None
    return ModelInfo(
        name=entry.name,
        kind=entry.kind,
        description=entry.description,
        params=None if missing else entry.count_params(),
        input=entry.input,
        options=dict(entry.options),
        available=not missing,
        reason=reason,
    )


def list_models() -> list[ModelInfo]:
    """Every registered model, sorted by name, with whether it can be loaded on this machine."""
    return [_entry_info(_ENTRIES[name]) for name in registered_names()]


def model_path(given: str, sources: Optional[ModelSources]) -> Path:
    """The file or directory a spec names: inside the models directory when `sources` is given."""
    if sources is not None:
        return sources.resolve_path(given)
    return Path(given).expanduser() if given.startswith("~/") else Path(given)


def load_registered(name: str, options: Mapping[str, Any]) -> tuple[Backbone, ModelInfo]:
    """The registered model's backbone built with `options` over its defaults, and its description."""
    entry = _ENTRIES[name]
    info = _entry_info(entry)
    if not info.available:
        raise Unavailable(f"model {entry.name!r} cannot be loaded: {info.reason}")
    info.options = merge_options(entry.name, entry.options, options)
    backbone = entry.build(info.options)
    return backbone, info


def merge_options(name: str, defaults: Options, given: Mapping[str, Any]) -> dict[str, OptionValue]:
    """Defaults overridden by the given options; unknown names raise InvalidInput, and so do non-integers
    for an option whose default is an integer (a float default, as token_keep's, takes any number)."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InvalidInput(
            f"model {name!r} does not take option(s) {unknown}", detail={"accepted": sorted(defaults)}
        )
    for key, value in given.items():
        number = (int, float) if isinstance(defaults[key], float) else (int,)
        if isinstance(value, bool) or not isinstance(value, number):
            kind = "a number" if float in number else "an integer"
            raise InvalidInput(f"option {key} must be {kind}, got {value!r}")
    return {**defaults, **given}

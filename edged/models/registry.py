"""The base-model registry: built-in backbones registered next to their code, plus user models.

`load_model(spec, num_classes)` accepts three kinds of spec:

- a registered name: `mobilenet_v2`, `minilm-l6` (see `list_models()`);
- `package.module:factory` or `package.module:factory=path/to/weights.safetensors` (or `.pt` /
  `.pth`, a torch state dict): a Python callable returning a backbone module that maps inputs to
  (N, D) features, with its weights loaded strictly from the file (without `=...`, the factory's own
  weights are used). See `edged.models.user` for how D and the kind are found;
- a path to a transformers directory (config.json + safetensors weights + tokenizer files): a text
  encoder with mean pooling over non-padding tokens.

Jobs pass `sources` (`edged.models.sources`): factories must be on the allow-list and paths inside the
models directory. Without it (the operator's own code: benchmarks, tests) every spec is loaded.

The result is a `Classifier` (backbone + a Linear head sized to the classes), a `preprocess`
function turning a `TaskData` into model-ready tensors, and a `ModelInfo` describing it.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from pydantic import BaseModel, Field
from torch import nn

from edged.data.task import Inputs, Kind, TaskData
from edged.devices import resolve_device
from edged.errors import InvalidInput, NotFound, Unavailable, quoted
from edged.models.classifier import Classifier
from edged.models.sources import ModelSources
from edged.sparse.layers import weight_layers


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
    options: Mapping[str, int]  # accepted options and their defaults
    requires: Mapping[str, str]  # importable module -> pip package providing it
    count_params: Callable[[], int]  # backbone parameter count, without loading weights
    build: Callable[[Mapping[str, int]], Backbone]


class ModelInfo(BaseModel):
    name: str = Field(description="registry name, transformers directory or module:factory spec")
    kind: Kind = Field(description="the inputs the model takes: image, text or tabular")
    description: str = Field(description="what the model is")
    params: Optional[int] = Field(default=None, description="backbone parameter count (head excluded)")
    input: str = Field(description="what inputs the model takes and how they are preprocessed")
    options: dict[str, int] = Field(
        default_factory=dict,
        description="preprocessing options (image_size, max_length): defaults when listed, values used when loaded",
    )
    available: bool = Field(default=True, description="whether the packages this model needs are installed")
    reason: Optional[str] = Field(default=None, description="why the model is unavailable, with the fix")


@dataclass
class LoadedModel:
    model: Classifier
    preprocess: Callable[[TaskData], Inputs]  # -> model-ready tensors on CPU, samples on dim 0
    info: ModelInfo


_ENTRIES: dict[str, Entry] = {}


def register(
    name: str,
    *,
    kind: Kind,
    description: str,
    input: str,
    options: Mapping[str, int],
    requires: Mapping[str, str],
    count_params: Callable[[], int],
) -> Callable[[Callable[[Mapping[str, int]], Backbone]], Callable[[Mapping[str, int]], Backbone]]:
    """Decorator registering a builder `build(options) -> Backbone` under `name`."""

    def decorate(build: Callable[[Mapping[str, int]], Backbone]) -> Callable[[Mapping[str, int]], Backbone]:
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


def load_model(
    spec: str,
    num_classes: int,
    device: Union[str, torch.device] = "cpu",
    seed: Optional[int] = None,
    sources: Optional[ModelSources] = None,
    **options: Any,
) -> LoadedModel:
    """Load a backbone by spec (see the module docstring), attach a head of `num_classes` outputs.

    `options` are preprocessing options (`image_size` for image models, `max_length` for text
    models; `kind` for module:factory models). `seed` makes the head's initialisation independent
    of the global torch RNG; without it the head draws from the global RNG (so `torch.manual_seed`
    fixes it). `sources` restricts user factories and paths (see the module docstring). The model
    is returned in eval mode on `device`.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidInput(f"num_classes must be an integer >= 2, got {num_classes!r}")
    target = resolve_device(device)
    backbone, info = _load_backbone(spec, options, sources)
    weight_layers(backbone.module, prefix="backbone.")  # raises InvalidInput if nothing can be adapted
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    model = Classifier(backbone.module, backbone.feature_dim, num_classes, info.kind, generator=generator)
    model = model.to(target).eval()
    preprocess = _checked_preprocess(backbone.preprocess, info)
    return LoadedModel(model=model, preprocess=preprocess, info=info)


def _load_backbone(spec: str, options: Mapping[str, Any],
                   sources: Optional[ModelSources]) -> tuple[Backbone, ModelInfo]:
    from edged.models import text, user  # imported here: both import this module (registration)

    if spec in _ENTRIES:
        return _load_entry(_ENTRIES[spec], options)
    if user.is_factory_spec(spec):
        return user.load_factory(spec, options, sources)
    directory = model_path(spec, sources)
    if directory.is_dir():
        return text.load_transformers_dir(directory, options)
    raise NotFound(
        f"no model {quoted(spec)}: not a registered name, a module:factory spec or a transformers directory",
        detail={"registered": registered_names(), "accepted": ACCEPTED_SPECS},
    )


ACCEPTED_SPECS = ("a registered name (GET /v1/models), 'package.module:factory[=path/to/weights.safetensors]', "
                  "or a directory with config.json, safetensors weights and tokenizer files")


def model_path(given: str, sources: Optional[ModelSources]) -> Path:
    """The file or directory a spec names: inside the models directory when `sources` is given."""
    if sources is not None:
        return sources.resolve_path(given)
    return Path(given).expanduser() if given.startswith("~/") else Path(given)


def _load_entry(entry: Entry, options: Mapping[str, Any]) -> tuple[Backbone, ModelInfo]:
    info = _entry_info(entry)
    if not info.available:
        raise Unavailable(f"model {entry.name!r} cannot be loaded: {info.reason}")
    info.options = merge_options(entry.name, entry.options, options)
    backbone = entry.build(info.options)
    return backbone, info


def merge_options(name: str, defaults: Mapping[str, int], given: Mapping[str, Any]) -> dict[str, int]:
    """Defaults overridden by the given options; unknown names or non-integers raise InvalidInput."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InvalidInput(
            f"model {name!r} does not take option(s) {unknown}", detail={"accepted": sorted(defaults)}
        )
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"option {key} must be an integer, got {value!r}")
    return {**defaults, **given}


def _checked_preprocess(preprocess: Callable[[TaskData], Inputs], info: ModelInfo) -> Callable[[TaskData], Inputs]:
    """`preprocess` guarded so that a dataset of the wrong kind fails with a clear message."""

    def checked(task: TaskData) -> Inputs:
        if task.kind != info.kind:
            raise InvalidInput(
                f"model {info.name!r} takes {info.kind} data, the dataset is {task.kind}",
                detail={"accepted": info.input},
            )
        return preprocess(task)

    return checked

"""Loading a base model by spec: the backbone, a classifier head sized to the classes, its preprocessing.

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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from edged.data.task import Inputs, TaskData
from edged.devices import resolve_device
from edged.errors import InvalidInput, NotFound, quoted
from edged.models import mobilenet_v2, text, user
from edged.models.classifier import Classifier
from edged.models.registry import Backbone, ModelInfo, load_registered, model_path, registered_names
from edged.models.sources import ModelSources
from edged.sparse.layers import weight_layers

BUILT_INS = (mobilenet_v2, text)  # importing them registers the built-in models

ACCEPTED_SPECS = ("a registered name (GET /v1/models), 'package.module:factory[=path/to/weights.safetensors]', "
                  "or a directory with config.json, safetensors weights and tokenizer files")


@dataclass
class LoadedModel:
    model: Classifier
    preprocess: Callable[[TaskData], Inputs]  # -> model-ready tensors on CPU, samples on dim 0
    info: ModelInfo


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
    if spec in registered_names():
        return load_registered(spec, options)
    if user.is_factory_spec(spec):
        return user.load_factory(spec, options, sources)
    directory = model_path(spec, sources)
    if directory.is_dir():
        return text.load_transformers_dir(directory, options)
    raise NotFound(
        f"no model {quoted(spec)}: not a registered name, a module:factory spec or a transformers directory",
        detail={"registered": registered_names(), "accepted": ACCEPTED_SPECS},
    )


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

"""User models given as `package.module:factory[=path/to/weights]`.

- `factory` is a callable taking no arguments and returning an nn.Module backbone that maps inputs to
  features (N, D): images (N, 3, S, S) for kind "image" (the default), float (N, F) for kind "tabular".
- D is the backbone's integer attribute `feature_dim` when it has one; otherwise it is measured by a
  forward pass in eval mode on zeros: (2, 3, S, S) for images, (2, F) for tabular data, F being the
  `in_features` of the first nn.Linear.
- The weights file, when given, is a `.safetensors` file or a torch state dict (`.pt` / `.pth`,
  loaded with weights_only=True); its keys and shapes must match the backbone's state_dict exactly, after
  dropping the keys that start with a prefix in the option `drop_weight_keys` (`edged.models.weight_keys`).
- Options: `kind` ("image" or "tabular"), for images `image_size` (default 64), and `drop_weight_keys`.
- With `sources` (a job's), the factory must be on the allow-list and the weights file inside the
  models directory (`edged.models.sources`).
"""

from __future__ import annotations

import importlib
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from edged.data.preprocess import DEFAULT_IMAGE_SIZE, check_image_size, preprocess_images, preprocess_tabular
from edged.data.task import TaskData
from edged.errors import InvalidInput, NotFound, quoted
from edged.models import weight_keys
from edged.models.registry import Backbone, ModelInfo, Options, merge_options, model_path
from edged.models.sources import ModelSources

FACTORY_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<factory>[A-Za-z_]\w*)(=(?P<weights>.+))?$")
FACTORY_KINDS = ("image", "tabular")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def is_factory_spec(spec: str) -> bool:
    return FACTORY_SPEC.match(spec) is not None


def load_factory(spec: str, options: Mapping[str, Any],
                 sources: Optional[ModelSources] = None) -> tuple[Backbone, ModelInfo]:
    match = FACTORY_SPEC.match(spec)
    if match is None:
        raise InvalidInput(
            f"{quoted(spec)} is not a module:factory spec", detail={"accepted": "package.module:factory=weights"}
        )
    if sources is not None:
        sources.check_factory(match["module"], match["factory"])
    weights = model_path(match["weights"], sources) if match["weights"] else None  # refused before any import
    options = dict(options)
    kind = options.pop("kind", "image")
    drop_prefixes = options.pop(weight_keys.OPTION, [])
    if not isinstance(drop_prefixes, (list, tuple)) or not all(isinstance(p, str) and p for p in drop_prefixes):
        raise InvalidInput(f"{weight_keys.OPTION} must be a list of key prefixes, got {drop_prefixes!r}")
    if drop_prefixes and weights is None:
        raise InvalidInput(f"{weight_keys.OPTION} drops keys of a weights file, and {quoted(spec)} names none",
                           detail={"accepted": "package.module:factory=weights"})
    if kind not in FACTORY_KINDS:
        raise InvalidInput(f"kind must be one of {list(FACTORY_KINDS)} for a module:factory model, got {kind!r}")
    used = merge_options(spec, {"image_size": DEFAULT_IMAGE_SIZE} if kind == "image" else {}, options)
    factory = import_factory(match["module"], match["factory"])
    module = build_module(factory, spec)
    if weights is not None:
        load_weights_(module, weights, drop_prefixes)
    module.eval()
    feature_dim = measure_feature_dim(module, kind, used)
    backbone = Backbone(module=module, feature_dim=feature_dim, preprocess=_preprocessor(kind, used))
    info = ModelInfo(
        name=spec,
        kind=kind,
        description=f"user backbone from {match['module']}:{match['factory']}",
        params=sum(p.numel() for p in module.parameters()),
        input=f"{kind} inputs" + (", resized to image_size and ImageNet-normalised" if kind == "image" else ""),
        options=used,
    )
    return backbone, info


def import_factory(module_name: str, factory_name: str) -> Callable[[], Any]:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # importing runs the module's own code: any failure is reported, not a crash
        raise NotFound(
            f"cannot import module {module_name!r}: {exc}", detail={"accepted": "an importable module path"}
        ) from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise NotFound(f"module {module_name!r} has no callable {factory_name!r}")
    return factory


def build_module(factory: Callable[[], Any], spec: str) -> nn.Module:
    try:
        module = factory()
    except Exception as exc:  # any failure of user code is reported, not propagated as a crash
        raise InvalidInput(f"factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise InvalidInput(f"factory {spec!r} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors file or a torch state dict, on CPU, without running pickled code."""
    if not path.is_file():
        raise NotFound(f"weights file not found: {path}")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise InvalidInput(f"unsupported weights file {path.name}", detail={"accepted": list(WEIGHT_SUFFIXES)})
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # Memory-map zip-format files (torch.save's default); the legacy format cannot be mapped.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # unpickling errors come in many types
        raise InvalidInput(f"cannot read {path.name} as a torch state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InvalidInput(f"{path.name} does not hold a state dict (a mapping of names to tensors)")
    return state


def load_weights_(module: nn.Module, path: Path, drop_prefixes: Sequence[str] = ()) -> None:
    """`module`'s parameters and buffers from the file, after dropping the keys under `drop_prefixes`."""
    expected = module.state_dict()
    state = weight_keys.drop_keys(read_state_dict(path), drop_prefixes, expected, path.name)
    weight_keys.check_match(tensor_shapes(expected), tensor_shapes(state), path.name)
    module.load_state_dict(state, strict=True)


def tensor_shapes(state: Mapping[str, Tensor]) -> dict[str, weight_keys.Shape]:
    return {key: tuple(value.shape) for key, value in state.items()}


@torch.no_grad()
def measure_feature_dim(module: nn.Module, kind: str, options: Options) -> int:
    declared = getattr(module, "feature_dim", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    probe = _probe_input(module, kind, options)
    try:
        features = module(probe)
    except Exception as exc:  # user code: report what went wrong
        raise InvalidInput(
            f"the backbone fails on a probe input shaped {tuple(probe.shape)}: {type(exc).__name__}: {exc}",
            detail={"accepted": "a backbone mapping inputs to (N, D) features, or one with a feature_dim attribute"},
        ) from exc
    if not isinstance(features, Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise InvalidInput(f"the backbone returns {shape}, not features shaped (N, D)")
    return int(features.shape[1])


def _probe_input(module: nn.Module, kind: str, options: Options) -> Tensor:
    """Zeros shaped like two samples (two, so BatchNorm layers behave as in a batch)."""
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if kind == "image":
        size = int(options["image_size"])
        return torch.zeros(2, 3, size, size, dtype=dtype)
    first_linear = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
    if first_linear is None:
        raise InvalidInput("a tabular backbone needs a feature_dim attribute or an nn.Linear taking the features")
    return torch.zeros(2, first_linear.in_features, dtype=dtype)


def _preprocessor(kind: str, options: Options) -> Callable[[TaskData], Tensor]:
    if kind == "image":
        image_size = int(options["image_size"])
        check_image_size(image_size)
        return lambda task: preprocess_images(task.x, image_size)  # type: ignore[arg-type]
    return lambda task: preprocess_tabular(task.x)  # type: ignore[arg-type]

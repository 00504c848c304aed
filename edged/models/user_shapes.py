"""What POST /v1/jobs reads to check a `module:factory[=weights]` model as the worker will load it
(`edged.jobs.validate`): the state_dict shapes of the backbone the factory builds (user code: its failure is
an InvalidInput, not a crash) and the shapes of the weights file's tensors.

Building a backbone takes milliseconds to seconds, so both are cached in the daemon process:
the backbone's shapes by factory and its module file's mtime, the file's shapes by path, size and mtime_ns.
A submit that changes only drop_weight_keys (the fix a 422 suggests) builds nothing again; a replaced weights
file is read again. Failures are not cached (lru_cache keeps no exceptions), so a fixed file is seen at once.
The daemon imports a module once: an edited factory module drops its cached shapes, but its new code runs in
the worker (a fresh process) only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Optional

from edged.errors import InvalidInput
from edged.models import user
from edged.models.weight_keys import Shape

CACHED_ENTRIES = 16  # backbones and weights files each: a board serves a handful of user models


def model_shapes(module_name: str, factory_name: str,
                 weights: Optional[Path]) -> tuple[Mapping[str, Shape], Optional[Mapping[str, Shape]]]:
    """(the backbone's state_dict shapes, the weights file's tensor shapes or None without a file); NotFound for
    a factory that is not there, InvalidInput for one that fails or a file that cannot be read."""
    user.import_factory(module_name, factory_name)
    expected = _backbone_shapes(module_name, factory_name, _mtime_ns(getattr(sys.modules[module_name], "__file__", None)))
    if weights is None:
        return expected, None
    stat = weights.stat()
    return expected, _file_shapes(str(weights), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=CACHED_ENTRIES)
def _backbone_shapes(module_name: str, factory_name: str, module_mtime_ns: Optional[int]) -> Mapping[str, Shape]:
    """The state_dict shapes of a freshly built backbone (`module_mtime_ns` keys the cache)."""
    module = user.build_module(user.import_factory(module_name, factory_name), f"{module_name}:{factory_name}")
    return MappingProxyType(user.tensor_shapes(module.state_dict()))


@lru_cache(maxsize=CACHED_ENTRIES)
def _file_shapes(path: str, size: int, mtime_ns: int) -> Mapping[str, Shape]:
    """The shapes of a weights file's tensors (`size` and `mtime_ns` key the cache): a safetensors header is read
    alone; a torch file is memory-mapped where it can be (`user.read_state_dict`)."""
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt") as tensors:
                return MappingProxyType({key: tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()})
        except SafetensorError as exc:
            raise InvalidInput(f"cannot read {Path(path).name} as safetensors: {exc}") from exc
    return MappingProxyType(user.tensor_shapes(user.read_state_dict(Path(path))))


def _mtime_ns(file: Optional[str]) -> Optional[int]:
    """A module file's mtime (None for a module without a file, e.g. a namespace package)."""
    return os.stat(file).st_mtime_ns if file else None

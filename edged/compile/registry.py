"""Compile backends by name, with `auto` picking the best one present (uvicorn's loop/http pattern).

Each backend is a module with `probe() -> (ok, reason)` (cheap: imports and device checks, no
compilation) and `compile(model, example_inputs, out_dir) -> CompiledModel`. Backend modules
import their heavy dependencies lazily, so importing the table never fails. Those listed in INT8_BACKENDS
also take `int8_ranges` (layer -> calibrated input range) and build from explicit-quantization ONNX.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Optional

from torch import Tensor, nn

from edged.compile.base import CompiledModel, require_cpu
from edged.errors import InvalidInput, Unavailable
from edged.compile.inputs import ModelInputs, validate_inputs

BACKENDS: dict[str, str] = {
    "tensorrt": "edged.compile.tensorrt_builder",
    "cusparselt": "edged.compile.cusparselt_backend",
    "onnxruntime": "edged.compile.onnxrt",
    "eager": "edged.compile.eager",
}
AUTO_ORDER = ("tensorrt", "cusparselt", "onnxruntime", "eager")  # best first
INT8_BACKENDS = ("tensorrt", "onnxruntime")  # run a QDQ graph (`quantize: int8`), best first


def _module(name: str) -> ModuleType:
    return importlib.import_module(BACKENDS[name])


def available_backends() -> dict[str, tuple[bool, str]]:
    """{name: (usable here, why / version)} for every backend, in `auto` preference order."""
    result: dict[str, tuple[bool, str]] = {}
    for name in AUTO_ORDER:
        try:
            result[name] = _module(name).probe()
        except Exception as exc:  # a broken install must read as unavailable, not crash doctor
            result[name] = (False, f"probe failed: {type(exc).__name__}: {exc}")
    return result


def resolve_backend(name: str, int8: bool = False) -> str:
    """The concrete backend for `name` ('auto' = first available; with `int8`, first available of
    INT8_BACKENDS); raises if it cannot run here, or cannot run INT8 when asked to."""
    if name != "auto" and name not in BACKENDS:
        raise InvalidInput(
            f"unknown compile backend {name!r}",
            detail={"accepted": ["auto", *AUTO_ORDER]},
        )
    status = available_backends()
    usable = [n for n, (ok, _) in status.items() if ok]
    if int8 and name not in ("auto", *INT8_BACKENDS):
        raise InvalidInput(f"compile backend {name!r} does not run INT8", detail={"accepted": ["auto", *INT8_BACKENDS]})
    if name == "auto":
        if int8:
            int8_usable = [n for n in INT8_BACKENDS if n in usable]
            if not int8_usable:
                raise Unavailable("no INT8 compile backend is available here", detail={"missing": list(INT8_BACKENDS),
                                                                                      "available": usable})
            return int8_usable[0]
        return usable[0]  # eager is always usable
    ok, reason = status[name]
    if not ok:
        raise Unavailable(
            f"compile backend {name!r} is not available here: {reason}; available: {', '.join(usable)}",
            detail={"missing": name, "reason": reason, "available": usable},
        )
    return name


def compile_model(model: nn.Module, example_inputs: ModelInputs, backend: str, out_dir: str | Path,
                  int8_ranges: Optional[dict[str, Tensor]] = None) -> CompiledModel:
    """Compile the merged (dense-with-zeros, CPU) model with `backend` ('auto' or a name) into
    `out_dir`; returns the artifact path, a predict callable and the sparse/dense layer report.
    With `int8_ranges` (weight name -> (amax, percentile) of the layer's input) the backend runs INT8."""
    require_cpu(model)
    validate_inputs(example_inputs)
    name = resolve_backend(backend, int8=int8_ranges is not None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int8_ranges is not None:
        return _module(name).compile(model.eval(), example_inputs, out, int8_ranges=int8_ranges)
    return _module(name).compile(model.eval(), example_inputs, out)

"""Switching a TensorRT engine between tasks on one base by refitting its weights instead of rebuilding it.

An engine built with `BuilderFlag.REFIT` (what `tensorrt_builder.build_engine` builds) keeps its weights
replaceable: `trt.Refitter(engine, logger)`, `set_named_weights(name, weights)` for each changed weight,
`get_missing_weights()` for weights the builder fused with them (a convolution and its BatchNorm, say), which
must be sent too, and `refit_cuda_engine()`. Weights are named after the ONNX initializers (the ONNX parser
names them so); `edged.compile.refit_map` says which initializer holds which state-dict tensor.

`REFIT_IDENTICAL` (with `STRIP_PLAN`) is for engines refitted with the very weights they were built with;
tasks have other weights, so edged builds with `REFIT`. The engine chose its sparse tactics for 2:4 weights:
a refit keeps every layer that was 2:4 at build time 2:4 (checked before anything is sent), which a base's
shared 2:4 pattern guarantees.

TensorRT cannot be installed where edged is developed: this module is written against TensorRT 10's Python
API, type-checked with mypy against `tensorrt-stubs`, and raises Unavailable without TensorRT. The name
mapping and what a switch sends are tested on real exported ONNX graphs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from edged.compile.refit_map import RefitMap, refit_arrays
from edged.compile.tensorrt_builder import _capturing_logger, _require_tensorrt, trt
from edged.errors import Unsupported


def _numpy_dtype(dtype: trt.DataType) -> type:
    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
             trt.DataType.INT64: np.int64}
    if dtype not in table:
        raise Unsupported(f"refitting weights of TensorRT type {dtype} is not supported")
    return table[dtype]


class EngineRefitter:
    """Refits one deserialized, refittable engine with other tasks' weights: the engine a runner executes
    (`tensorrt_builder.EngineRunner(plan).engine`), whose execution contexts stay valid across refits."""

    def __init__(self, engine: trt.ICudaEngine, mapping: RefitMap) -> None:
        _require_tensorrt()
        if not engine.refittable:
            raise Unsupported("the engine was built without BuilderFlag.REFIT: it can only be rebuilt")
        self.engine, self.mapping = engine, mapping
        self.logger, self.log = _capturing_logger()
        self.refitter = trt.Refitter(engine, self.logger)
        self.refittable = set(self.refitter.get_all_weights())
        self.by_initializer = {init: name for name, init in mapping.initializers.items()}

    def _send(self, arrays: dict[str, np.ndarray], keep: list[np.ndarray]) -> None:
        for init, array in arrays.items():
            if init not in self.refittable:
                raise Unsupported(f"TensorRT cannot refit {init!r} (not among the engine's refittable weights)")
            prototype = self.refitter.get_weights_prototype(init)
            data: np.ndarray = np.ascontiguousarray(array.astype(_numpy_dtype(prototype.dtype)))
            keep.append(data)  # trt.Weights does not copy: the array must live until the refit returns
            if data.size != prototype.size or not self.refitter.set_named_weights(init, trt.Weights(data)):
                raise Unsupported(f"TensorRT refused the weights {init!r} ({data.size} values, engine has "
                                  f"{prototype.size})", detail={"log": self.log[-10:]})

    def refit(self, target: dict[str, Tensor], changed: Iterable[str]) -> dict[str, Any]:
        """Send the `changed` tensors of task state `target`, then whatever TensorRT says it also needs (weights
        it fused with them), and refit. The engine must have no work in flight. Returns what was sent and how long
        it took."""
        started = time.perf_counter()
        keep: list[np.ndarray] = []
        arrays = refit_arrays(self.mapping, target, changed)
        self._send(arrays, keep)
        missing = [init for init in self.refitter.get_missing_weights() if init not in arrays]
        unknown = [init for init in missing if init not in self.by_initializer]
        if unknown:
            raise Unsupported(f"TensorRT also needs weights no state-dict tensor maps to: {unknown[:10]}")
        also = refit_arrays(self.mapping, target, [self.by_initializer[init] for init in missing])
        self._send(also, keep)
        if not self.refitter.refit_cuda_engine():
            raise Unsupported("TensorRT failed to refit the engine", detail={"log": self.log[-10:]})
        torch.cuda.synchronize()
        return {"sent": sorted(arrays), "also_required": sorted(also), "seconds": time.perf_counter() - started,
                "bytes": int(sum(a.nbytes for a in keep))}


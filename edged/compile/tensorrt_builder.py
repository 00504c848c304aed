"""`tensorrt` backend: the TensorRT 10 builder on our checked ONNX file, FP16 + SPARSE_WEIGHTS + REFIT.

TensorRT cannot be installed where edged is developed; this module is written against the real
TensorRT 10 Python API, type-checked with mypy and `tensorrt-stubs`, and its tests run only where
`tensorrt` imports for real. Nothing here fakes an engine.

What the report records, because "2:4 engine" claims are often untrue:
- `eligible`: layers the builder found with 2:4 weights ("(Sparsity) Layers eligible for sparse
  math: ..." in the build log);
- `picked`: layers where it chose a sparse tactic ("(Sparsity) TRT inference plan picked sparse
  implementation for layers: ..."); TensorRT keeps a dense tactic where sparse is slower;
- `sparse_tactics`: engine-inspector layers (DETAILED profiling) whose tactic name says sparse.
TensorRT names layers after ONNX nodes, so these lists use TensorRT's names, not weight names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from edged.compile.base import CompiledModel
from edged.compile.inputs import ModelInputs, batch_size
from edged.compile.onnx_export import onnx_max_abs_diff
from edged.compile.qdq import export_checked_int8
from edged.compile.refit_map import refit_map
from edged.compile.recipe import export_checked, predictor
from edged.errors import Unavailable, Unsupported

SPARSITY_LINE = re.compile(
    r"\(Sparsity\) (Layers eligible for sparse math|TRT inference plan picked sparse implementation for layers): ?(.*)")
WORKSPACE_BYTES = 1 << 30


try:
    import tensorrt as trt
except ImportError:  # the usual case off a Jetson / TensorRT machine
    trt = None  # type: ignore[assignment]


def _require_tensorrt() -> None:
    """Raise Unavailable unless the real TensorRT is importable. (tensorrt-stubs alone makes
    `import tensorrt` succeed as an empty namespace package, hence the Builder check.)"""
    if trt is None:
        raise Unavailable("TensorRT is not installed (no `tensorrt` Python package)")
    if not hasattr(trt, "Builder"):
        raise Unavailable("`tensorrt` here is only type stubs, not the TensorRT runtime")


def probe() -> tuple[bool, str]:
    try:
        _require_tensorrt()
    except Unavailable as exc:
        return False, exc.message
    if not torch.cuda.is_available():
        return False, f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible to PyTorch"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"


def _capturing_logger() -> tuple[trt.ILogger, list[str]]:
    """A logger keeping every message (the sparsity lines are INFO); warnings and errors printed."""
    lines: list[str] = []
    loud = {trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.WARNING}

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity == trt.ILogger.Severity.VERBOSE:
                return  # a custom ILogger receives everything; keep INFO and up
            lines.append(msg)
            if severity in loud:
                print(f"[TensorRT] {msg}")

    return CapturingLogger(), lines


def sparsity_from_log(lines: list[str]) -> dict[str, list[str]]:
    """{"eligible": [...], "picked": [...]} from TensorRT's (Sparsity) build-log lines."""
    found: dict[str, list[str]] = {"eligible": [], "picked": []}
    for line in lines:
        match = SPARSITY_LINE.search(line)
        if match:
            key = "eligible" if match.group(1).startswith("Layers eligible") else "picked"
            found[key] += [name.strip() for name in match.group(2).split(",") if name.strip()]
    return found


def _profile_shapes(example: ModelInputs, max_batch: int) -> dict[str | None, tuple[tuple, tuple, tuple]]:
    """(min, opt, max) per input: batch 1..max_batch, optimised for the example's batch."""
    items = example.items() if isinstance(example, dict) else [(None, example)]
    shapes: dict[str | None, tuple[tuple, tuple, tuple]] = {}
    for name, t in items:
        rest = tuple(t.shape[1:])
        shapes[name] = ((1, *rest), (int(t.shape[0]), *rest), (max(max_batch, int(t.shape[0])), *rest))
    return shapes


def build_engine(onnx_path: Path, example: ModelInputs, engine_path: Path, max_batch: int,
                 refittable: bool = True, int8: bool = False) -> tuple[bytes, list[str]]:
    """Parse `onnx_path`, build an FP16 + SPARSE_WEIGHTS engine (+ INT8 from a QDQ graph's own scales when
    `int8`), write it; returns (plan, log lines).

    `refittable` (REFIT): a task switch on the base refits the engine's weights (`tensorrt_refit`) instead of
    rebuilding it; TensorRT may then forgo some fusions, so such an engine can be slower (README: refit vs
    rebuild). REFIT, not REFIT_IDENTICAL: other tasks bring other weights."""
    _require_tensorrt()
    logger, log_lines = _capturing_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: always explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise Unsupported(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if refittable:
        config.set_flag(trt.BuilderFlag.REFIT)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ scales, no calibrator
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    shapes = _profile_shapes(example, max_batch)
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        low, opt, high = shapes[tensor.name] if tensor.name in shapes else shapes[None]
        profile.set_shape(tensor.name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise Unsupported(f"TensorRT failed to build an engine from {onnx_path.name}", detail={"log": log_lines[-20:]})
    plan = bytes(serialized)
    engine_path.write_bytes(plan)
    return plan, log_lines


def sparse_tactic_layers(engine: trt.ICudaEngine) -> list[str]:
    """Engine-inspector layers whose chosen tactic is a sparse kernel."""
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    return [
        layer.get("Name", "?")
        for layer in info.get("Layers", [])
        if isinstance(layer, dict) and "sparse" in str(layer.get("TacticName", "")).lower()
    ]


def _torch_dtypes() -> dict[Any, torch.dtype]:
    if trt is None or not hasattr(trt, "DataType"):
        return {}
    return {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }


TORCH_DTYPES = _torch_dtypes()


class EngineRunner:
    """Runs a deserialized engine on torch CUDA tensors (inputs by ONNX input name)."""

    def __init__(self, plan: bytes) -> None:
        _require_tensorrt()
        self.logger, _ = _capturing_logger()
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:  # TensorRT returns None (and logs why) for a plan of another version or GPU
            raise Unsupported(f"TensorRT {trt.__version__} cannot deserialize this engine ({len(plan)} bytes): it was "
                              "built by another TensorRT version or for another GPU; compile the job again here")
        self.engine = engine
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def _torch_dtype(self, name: str) -> torch.dtype:
        return TORCH_DTYPES[self.engine.get_tensor_dtype(name)]

    @torch.inference_mode()
    def __call__(self, inputs: ModelInputs) -> Tensor:
        feed = inputs if isinstance(inputs, dict) else {self.inputs[0]: inputs}
        keep_alive = []
        for name in self.inputs:
            t = feed[name].to("cuda", self._torch_dtype(name)).contiguous()
            keep_alive.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            out = torch.empty(self.context.get_tensor_shape(name)[:], dtype=self._torch_dtype(name), device="cuda")
            outs[name] = out
            self.context.set_tensor_address(name, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise Unsupported("TensorRT execution failed")
        stream.synchronize()
        return outs[self.outputs[0]]


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path, max_batch: int = 128,
            int8_ranges: Optional[dict[str, Tensor]] = None) -> CompiledModel:
    if int8_ranges is not None:  # the QDQ graph, its 2:4 checked after dequantization (edged.compile.qdq)
        exported = export_checked_int8(model, example_inputs, out_dir / "model.int8.onnx", int8_ranges)
    else:
        exported = export_checked(model, example_inputs, out_dir / "model.onnx")
        onnx_max_abs_diff(model, exported.path, example_inputs)
    engine_path = out_dir / "model.engine"
    plan, log = build_engine(exported.path, example_inputs, engine_path, max(max_batch, batch_size(example_inputs)),
                             int8=int8_ranges is not None)
    runner = EngineRunner(plan)
    refit_map(exported.path, model.state_dict(), exported.sparse).save(out_dir / "refit_map.json")
    found = sparsity_from_log(log)
    report = exported.report("tensorrt")
    report.sparse = {name: "TensorRT picked a sparse implementation" for name in found["picked"]}
    report.details.update({
        "eligible": found["eligible"],
        "picked": found["picked"],
        "sparse_tactics": sparse_tactic_layers(runner.engine),
        "eligible_not_picked": [n for n in found["eligible"] if n not in found["picked"]],
        "pruned_weights": sorted(exported.sparse),
        "refittable": runner.engine.refittable,
    })
    (out_dir / "tensorrt_report.json").write_text(json.dumps(report.as_dict(), indent=2))
    return CompiledModel("tensorrt", engine_path, predictor(runner, "cuda"), report)

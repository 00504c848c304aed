"""onnxruntime on the CPU: the ONNX file is the artifact, checked for 2:4 and against PyTorch.

With `int8_ranges` the artifact is the explicit-quantization graph (`edged.compile.qdq`), checked for 2:4
after dequantization; its outputs differ from PyTorch's by quantization error, which the job measures as
accuracy on its validation split rather than refusing at a float tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from edged.compile.base import CompiledModel
from edged.compile.inputs import ModelInputs, call_model
from edged.compile.onnx_export import OnnxRunner, onnx_max_abs_diff
from edged.compile.qdq import export_checked_int8
from edged.compile.recipe import export_checked, predictor

NO_SPARSE_KERNELS = "onnxruntime CPU has no 2:4 sparse kernels; pattern kept in the file"


def probe() -> tuple[bool, str]:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return False, f"missing Python package {exc.name!r} (pip install onnx onnxscript onnxruntime)"
    return True, f"onnxruntime {onnxruntime.__version__} (CPU)"


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path,
            int8_ranges: Optional[dict[str, Tensor]] = None) -> CompiledModel:
    if int8_ranges is not None:
        return compile_int8(model, example_inputs, out_dir, int8_ranges)
    exported = export_checked(model, example_inputs, out_dir / "model.onnx")
    max_diff = onnx_max_abs_diff(model, exported.path, example_inputs)
    report = exported.report("onnxruntime", sparse_runs_dense=NO_SPARSE_KERNELS)
    report.details["max_abs_diff_vs_pytorch"] = max_diff
    return CompiledModel("onnxruntime", exported.path, predictor(OnnxRunner(exported.path)), report)


def compile_int8(model: nn.Module, example_inputs: ModelInputs, out_dir: Path,
                 int8_ranges: dict[str, Tensor]) -> CompiledModel:
    """The QDQ graph (int8 weights, calibrated activation scales), checked for 2:4, in an onnxruntime session."""
    exported = export_checked_int8(model, example_inputs, out_dir / "model.int8.onnx", int8_ranges)
    runner = OnnxRunner(exported.path)
    report = exported.report("onnxruntime", sparse_runs_dense=NO_SPARSE_KERNELS)
    with torch.no_grad():
        diff = runner(example_inputs) - call_model(model, example_inputs)  # (B, classes): quantization error
    report.details["max_abs_diff_vs_pytorch"] = float(diff.abs().max())
    return CompiledModel("onnxruntime", exported.path, predictor(runner), report)

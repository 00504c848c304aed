"""onnxruntime on the CPU: the ONNX file is the artifact, checked for 2:4 and against PyTorch."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edged.compile.base import CompiledModel
from edged.compile.inputs import ModelInputs
from edged.compile.onnx_export import OnnxRunner, onnx_max_abs_diff
from edged.compile.recipe import export_checked, predictor


def probe() -> tuple[bool, str]:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return False, f"missing Python package {exc.name!r} (pip install onnx onnxscript onnxruntime)"
    return True, f"onnxruntime {onnxruntime.__version__} (CPU)"


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path) -> CompiledModel:
    exported = export_checked(model, example_inputs, out_dir / "model.onnx")
    max_diff = onnx_max_abs_diff(model, exported.path, example_inputs)
    report = exported.report("onnxruntime",
                             sparse_runs_dense="onnxruntime CPU has no 2:4 sparse kernels; pattern kept in the file")
    report.details["max_abs_diff_vs_pytorch"] = max_diff
    return CompiledModel("onnxruntime", exported.path, predictor(OnnxRunner(exported.path)), report)

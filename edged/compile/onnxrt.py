"""onnxruntime on the CPU: the ONNX file is the artifact, checked for 2:4 and against PyTorch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edged.compile.base import CompiledModel, CompileReport, pruned_weights, two_four_layers
from edged.compile.inputs import ModelInputs
from edged.compile.onnx_export import OnnxRunner, check_onnx_2_4, export_onnx, onnx_max_abs_diff


def probe() -> tuple[bool, str]:
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return False, f"missing Python package {exc.name!r} (pip install onnx onnxscript onnxruntime)"
    return True, f"onnxruntime {onnxruntime.__version__} (CPU)"


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path) -> CompiledModel:
    sparse, dense = two_four_layers(model)
    path = export_onnx(model, example_inputs, out_dir / "model.onnx")
    check = check_onnx_2_4(path, pruned_weights(sparse))
    check.raise_if_failed()
    max_diff = onnx_max_abs_diff(model, path, example_inputs)
    runner = OnnxRunner(path)

    def predict(inputs: ModelInputs) -> torch.Tensor:
        return runner(inputs).float()

    report = CompileReport(
        backend="onnxruntime",
        details={"pattern_check": check.as_dict(), "max_abs_diff_vs_pytorch": max_diff},
    )
    report.dense.update(dense)
    report.dense.update({name: "onnxruntime CPU has no 2:4 sparse kernels; pattern kept in the file" for name in sparse})
    return CompiledModel("onnxruntime", path, predict, report)

"""The recipe every compile backend follows: export the merged model, check that its 2:4 pattern
survived in the artifact, load the artifact with the backend's runtime, predict CPU float32 logits.

A backend supplies the artifact's path (its suffix picks the exporter: `.onnx` or `.pt2`) and the
runtime that runs it; `export_checked` and `predictor` are the shared steps on either side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from edged.compile.base import CompileReport, two_four_layers
from edged.compile.inputs import ModelInputs, to_device
from edged.compile.onnx_export import check_onnx_2_4, export_onnx
from edged.compile.pattern import PatternCheck
from edged.compile.program import check_program_2_4, export_program
from edged.sparse.layers import WeightLayer

Exporter = Callable[[nn.Module, ModelInputs, Path], Path]
PatternChecker = Callable[[Path, dict[str, Tensor]], PatternCheck]
EXPORTERS: dict[str, tuple[Exporter, PatternChecker]] = {
    ".onnx": (export_onnx, check_onnx_2_4),
    ".pt2": (export_program, check_program_2_4),
}


@dataclass
class CheckedExport:
    """An exported artifact whose pruned weights were found in it with their exact 2:4 pattern."""

    path: Path
    check: PatternCheck
    sparse: dict[str, WeightLayer]  # weight name -> layer whose weight holds 2:4
    dense: dict[str, str]  # weight name -> why it is not 2:4
    int8: Optional[dict] = None  # a QDQ export's summary (edged.compile.qdq), None for a float one

    def report(self, backend: str, sparse_runs_dense: Optional[str] = None) -> CompileReport:
        """The backend's report with the pattern check and the dense layers; `sparse_runs_dense`
        is why the 2:4 layers run dense kernels too, for backends without sparse kernels."""
        report = CompileReport(backend=backend, dense=dict(self.dense), details={"pattern_check": self.check.as_dict()})
        if self.int8 is not None:
            report.details["int8"] = self.int8
        if sparse_runs_dense is not None:
            report.dense.update({name: sparse_runs_dense for name in self.sparse})
        return report


def export_checked(model: nn.Module, example_inputs: ModelInputs, path: Path) -> CheckedExport:
    """Export `model` to `path` (format by suffix) and raise Unsupported unless every 2:4 weight is
    in the artifact with exactly its pattern."""
    sparse, dense = two_four_layers(model)
    export, check_2_4 = EXPORTERS[path.suffix]
    path = export(model, example_inputs, path)
    check = check_2_4(path, {name: layer.get_parameter("weight").detach() for name, layer in sparse.items()})
    check.raise_if_failed()
    return CheckedExport(path, check, sparse, dense)


def predictor(run: Callable[[ModelInputs], Tensor], device: str = "cpu",
              float_dtype: Optional[torch.dtype] = None) -> Callable[[ModelInputs], Tensor]:
    """`predict(inputs) -> logits`: inputs moved to the runtime's device (floating ones cast to
    `float_dtype`), logits back as CPU float32, as the job re-measures accuracy with them."""

    @torch.no_grad()
    def predict(inputs: ModelInputs) -> Tensor:
        return run(to_device(inputs, device, float_dtype)).float().cpu()

    return predict

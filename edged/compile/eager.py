"""The reference backend: the torch.export program of the merged model, run by PyTorch (dense)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edged.compile.base import CompiledModel, CompileReport, pruned_weights, two_four_layers
from edged.compile.inputs import ModelInputs, call_model
from edged.compile.program import check_program_2_4, export_program, load_program_module


def probe() -> tuple[bool, str]:
    return True, f"PyTorch {torch.__version__} (always present; dense kernels, the reference)"


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path) -> CompiledModel:
    sparse, dense = two_four_layers(model)
    path = export_program(model, example_inputs, out_dir / "model.pt2")
    check = check_program_2_4(path, pruned_weights(sparse))
    check.raise_if_failed()
    program = load_program_module(path)

    @torch.no_grad()
    def predict(inputs: ModelInputs) -> torch.Tensor:
        return call_model(program, inputs).float().cpu()

    report = CompileReport(backend="eager", details={"pattern_check": check.as_dict()})
    report.dense.update(dense)
    report.dense.update({name: "eager PyTorch runs dense kernels; 2:4 pattern kept in the artifact" for name in sparse})
    return CompiledModel("eager", path, predict, report)

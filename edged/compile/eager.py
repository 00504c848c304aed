"""The reference backend: the torch.export program of the merged model, run by PyTorch (dense)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from edged.compile.base import CompiledModel
from edged.compile.inputs import ModelInputs, call_model
from edged.compile.program import load_program_module
from edged.compile.recipe import export_checked, predictor


def probe() -> tuple[bool, str]:
    return True, f"PyTorch {torch.__version__} (always present; dense kernels, the reference)"


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path) -> CompiledModel:
    exported = export_checked(model, example_inputs, out_dir / "model.pt2")
    program = load_program_module(exported.path)
    report = exported.report("eager", sparse_runs_dense="eager PyTorch runs dense kernels; 2:4 pattern kept in the artifact")
    return CompiledModel("eager", exported.path, predictor(partial(call_model, program)), report)

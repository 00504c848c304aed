"""`cusparselt` compile backend: an fp16 CUDA copy of the model with the fastest verified kernel per 2:4
Linear group (dense, torch's semi-structured tensor, or edged's cuSPARSELt binding at its tuned alg id),
chosen in place inside the model's CUDA graph (`in_place`), run through CUDA graphs.

Decisions are made at the example's batch size: compile with the batch you will serve. The artifact is
the plan (JSON: per-layer kernel, every in-place trial, versions) next to the torch.export program of
the merged weights it applies to. Conv2d layers stay dense (the 2:4 kernels are matmul only).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from edged.compile.base import CompiledModel
from edged.compile.cuda_graph import GraphedRunner
from edged.compile.in_place import DENSE, E2E_TOL, choose_in_place_
from edged.compile.inputs import ModelInputs, call_model, to_device
from edged.compile.recipe import export_checked, predictor
from edged.compile.semi_structured import DTYPE, check_close
from edged.compile.semi_structured import probe as probe  # the backend's probe (registry contract)


def _batch(inputs: ModelInputs) -> int:
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    return int(first.shape[0])


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path) -> CompiledModel:
    """The compiled model and its report: which 2:4 layers run which kernel, and why the rest are dense."""
    exported = export_checked(model, example_inputs, out_dir / "model.pt2")
    gpu_model = copy.deepcopy(model).to("cuda", DTYPE).eval()
    inputs = to_device(example_inputs, "cuda", DTYPE)
    with torch.inference_mode():
        dense_out = call_model(gpu_model, inputs)
    choice = choose_in_place_(gpu_model, inputs, _batch(inputs))
    dense = dict(choice.refused)
    runner = GraphedRunner(lambda x: call_model(gpu_model, x))
    max_err = check_close(runner(inputs), dense_out, "the 2:4 model", E2E_TOL)
    report = exported.report("cusparselt")
    why = f"whole model {choice.best_ms:.3f} ms vs dense {choice.dense_ms:.3f} ms, chosen in its CUDA graph"
    why += f"; 2:4 given up: {choice.given_up}" if choice.given_up else ""
    for name, kernel in choice.layers.items():
        if kernel == DENSE:
            dense[f"{name}.weight"] = f"kept dense: no 2:4 kernel made the whole model faster ({why})"
        else:
            report.sparse[f"{name}.weight"] = f"{kernel}: {why}"
    report.dense.update(dense)  # adds the 2:4 layers kept dense, each with why
    report.details.update({
        "max_rel_err_vs_dense_fp16": max_err,
        "cuda_graph_fallbacks": runner.fallbacks,
        "device": probe()[1],
        "torch": torch.__version__,
        "kernels": choice.kernels,
        # what rebuilds each sparse layer's kernel (tasks/compiled_2_4 serves tasks on the base through these)
        "choices": {f"{name}.weight": asdict(layer) for name, layer in choice.sparse_layers.items()},
        "trials": [asdict(t) for t in choice.trials],
    })
    plan = out_dir / "cusparselt_plan.json"
    plan.write_text(json.dumps({**report.as_dict(), "program": exported.path.name}, indent=2, default=str))
    return CompiledModel("cusparselt", plan, predictor(runner, "cuda", DTYPE), report)

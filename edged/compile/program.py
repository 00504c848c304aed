"""torch.export of a merged model, saved with torch.export.save, and the 2:4 check of its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from edged.compile.inputs import ModelInputs, at_least_batch_2, dynamic_shapes, export_args, validate_inputs
from edged.compile.pattern import PatternCheck, weight_problem


@torch.no_grad()
def export_program(model: nn.Module, inputs: ModelInputs, path: str | Path) -> Path:
    """Save `torch.export.export(model, ...)` at `path` (a .pt2 archive); batch dimension dynamic."""
    inputs = at_least_batch_2(validate_inputs(inputs))
    args, kwargs = export_args(inputs)
    program = torch.export.export(model.eval(), args, kwargs, dynamic_shapes=dynamic_shapes(inputs))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def load_program_module(path: str | Path) -> nn.Module:
    """The saved program as a callable module (what the `eager` backend serves)."""
    return torch.export.load(str(path)).module()


def check_program_2_4(path: str | Path, expected_layers: dict[str, Tensor]) -> PatternCheck:
    """Verify each pruned weight (name -> pruned weight) is in the saved program's state dict
    under the same name with exactly the same N:M zero pattern."""
    program = torch.export.load(str(path))
    weights = {**program.state_dict, **program.constants}
    check = PatternCheck(artifact=str(path))
    for name, expected in expected_layers.items():
        actual = weights.get(name)
        if not isinstance(actual, Tensor):
            check.problems[name] = "not in the exported program's state dict"
            continue
        problem = weight_problem(expected.float(), actual.detach().float())
        if problem:
            check.problems[name] = problem
        else:
            check.found[name] = name
    return check

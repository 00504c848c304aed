import pytest
import torch

from edged.compile.program import check_program_2_4, export_program, load_program_module
from edged.compile.inputs import call_model


@pytest.mark.parametrize("case", ["cnn", "text"])
def test_saved_program_keeps_2_4_and_matches(case, request, tmp_path):
    model, weights, inputs = request.getfixturevalue(case)
    path = export_program(model, inputs, tmp_path / "m.pt2")
    check = check_program_2_4(path, weights)
    assert check.ok, check.problems
    assert set(check.found) == set(weights)
    loaded = load_program_module(path)
    with torch.no_grad():
        torch.testing.assert_close(call_model(loaded, inputs), call_model(model, inputs))


def test_program_check_detects_changed_weights(cnn, tmp_path):
    model, weights, inputs = cnn
    path = export_program(model, inputs, tmp_path / "m.pt2")
    wrong = {name: torch.ones_like(w) for name, w in weights.items()}
    check = check_program_2_4(path, wrong)
    assert not check.ok and set(check.problems) == set(weights)

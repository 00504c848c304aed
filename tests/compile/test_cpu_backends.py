import pytest
import torch

from edged.compile import compile_model
from edged.compile.inputs import call_model


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_cpu_backend_artifact_predict_and_report(backend, pruned_mlp, tmp_path):
    model, prune_report, x = pruned_mlp
    compiled = compile_model(model, x, backend, tmp_path)
    assert compiled.backend == backend and compiled.artifact.is_file()
    assert compiled.report.details["pattern_check"]["ok"]
    assert set(compiled.report.details["pattern_check"]["found"]) == set(prune_report.pruned)
    # the layer that could not be pruned is reported dense with its reason
    assert "odd_in.weight" in compiled.report.dense
    assert "multiple of 4" in compiled.report.dense["odd_in.weight"]
    other_batch = torch.randn(2, 8, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled.predict(other_batch), call_model(model, other_batch), atol=1e-4, rtol=1e-3)


def test_unpruned_layers_are_reported_as_not_2_4(pruned_mlp, tmp_path):
    model, _, x = pruned_mlp
    with torch.no_grad():
        model.fc1.weight.add_(0.01)  # dense again
    compiled = compile_model(model, x, "eager", tmp_path)
    assert "not hold the 2:4 pattern" in compiled.report.dense["fc1.weight"]

"""cusparselt and tensorrt backends: run only where the hardware / library is present."""

import pytest
import torch

from edged.compile import compile_model
from edged.compile.semi_structured import probe as cusparselt_probe
from edged.compile.tensorrt_builder import probe as tensorrt_probe
from edged.export.inputs import call_model
from edged.sparse.nm import check_2_4

CUSPARSELT_OK, CUSPARSELT_WHY = cusparselt_probe()
TENSORRT_OK, TENSORRT_WHY = tensorrt_probe()


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_cusparselt_matches_pytorch_and_reports_every_linear(pruned_mlp, tmp_path):
    from edged.compile.semi_structured import SemiSparseLinear

    model, prune_report, x = pruned_mlp
    compiled = compile_model(model, x, "cusparselt", tmp_path)
    assert compiled.artifact.is_file() and (tmp_path / "model.pt2").is_file()
    report = compiled.report
    decided = set(report.sparse) | set(report.dense)
    assert set(prune_report.pruned) <= decided
    assert "odd_in.weight" in report.dense
    with torch.no_grad():
        torch.testing.assert_close(compiled.predict(x), call_model(model, x), atol=5e-2, rtol=5e-2)
    # the kernel itself, forced sparse at an odd token count (padding path)
    layer = model.fc1.to("cuda", torch.float16)
    assert check_2_4(layer.weight)
    sparse = SemiSparseLinear(layer.weight, layer.bias)
    tokens = torch.randn(3, 7, 32, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(sparse(tokens), layer(tokens), atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not TENSORRT_OK, reason=TENSORRT_WHY)
def test_tensorrt_engine_is_built_and_sparsity_is_reported(pruned_mlp, tmp_path):
    model, prune_report, x = pruned_mlp
    compiled = compile_model(model, x, "tensorrt", tmp_path)
    assert compiled.artifact.suffix == ".engine" and compiled.artifact.stat().st_size > 0
    details = compiled.report.details
    assert details["pattern_check"]["ok"]
    assert isinstance(details["eligible"], list) and isinstance(details["picked"], list)
    with torch.no_grad():
        torch.testing.assert_close(compiled.predict(x), call_model(model, x), atol=5e-2, rtol=5e-2)

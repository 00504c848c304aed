"""cusparselt and tensorrt backends: run only where the hardware / library is present."""

import pytest
import torch

from edged.compile import compile_model
from edged.compile.semi_structured import probe as cusparselt_probe
from edged.compile.isolation import run_isolated
from edged.compile.tensorrt_builder import probe as tensorrt_probe
from edged.compile.inputs import call_model
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


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_tuning_workers_verify_every_config_they_time():
    from edged.compile.sparse_tuning import plan_layers

    shapes = [(64, 32, True, 21), (128, 64, False, 256)]
    plan = plan_layers(shapes, iters=5, timeout_s=300, sweep_algs=4)
    for shape in shapes:
        choice = plan[shape]
        assert choice.dense_ms and choice.dense_ms > 0, choice.reason
        # a kernel that breaks CUDA is skipped, but the default kernel and most alg ids run and are verified
        assert choice.config is not None and choice.sparse_ms > 0, choice.reason
        assert "verified configs" in choice.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where the tuning worker fails")
def test_a_failing_worker_is_recorded_and_the_rest_go_on():
    """Without CUDA every tuning case fails and leaves the worker unusable: each such case gets its
    own error row, and after two broken workers the group's remaining cases are skipped."""
    cases = [{"op": "dense", "out": 16, "in": 16, "bias": False, "tokens": 8, "group": "tune"} for _ in range(3)]
    rows = run_isolated("edged.compile.sparse_tuning", cases, timeout_s=120)
    assert [r["worker_broken"] for r in rows] == [True, True, False]
    assert all("cuda" in r["error"].lower() for r in rows[:2])  # each case's own failure, not a generic one
    assert rows[2]["error"].startswith("skipped: tune broke")


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

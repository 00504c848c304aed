"""INT8 2:4 kernel choice per shape (edged.compile.int8_tuning): the verdict from worker rows on any machine,
the sweep and the in-place keep on a GPU."""

import pytest
import torch
from torch import nn

from edged.compile.int8_tuning import fastest_alg, keep_faster
from edged.compile.semi_structured import probe

CUSPARSELT_OK, CUSPARSELT_WHY = probe()


def test_the_fastest_verified_alg_id_wins_and_alg_0_is_kept_with_the_reason_when_none_ran():
    tried = [(0, {"ms": 0.30, "rel_err": 0.01}), (1, {"error": "Unsupported: output differs"}),
             (2, {"ms": 0.12, "rel_err": 0.01}), (3, {"ms": 0.20, "rel_err": 0.01}),
             (4, {"error": "RuntimeError: CUDA error", "worker_broken": True})]
    assert fastest_alg(tried) == {"alg_id": 2, "ms": 0.12, "default_ms": 0.30, "verified": 3}
    none = fastest_alg([(0, {"error": "RuntimeError: invalid value"}), (1, {"error": "skipped: time budget ran out"})])
    assert none["alg_id"] == 0 and none["ms"] is None and none["verified"] == 0
    assert "invalid value" in none["error"] and "time budget" in none["error"]
    assert fastest_alg([])["error"] == "not tried"


@pytest.mark.parametrize(("timings", "kept"), [([1.0, 0.6, 0.7, 1.1], True), ([0.6, 0.9, 0.5, 0.7], False),
                                               ([0.8, 0.9, 0.7, 0.8], False)])  # the last a tie: alg 0 stays
def test_the_tuned_kernels_stay_only_when_their_paired_mean_is_faster(timings, kept):
    applied, clock = [], iter(timings)

    def timed() -> float:
        return next(clock)

    alg0_ms, tuned_ms, chosen = keep_faster(applied.append, timed)
    assert applied[:4] == [False, True, True, False]  # alg 0, tuned, tuned, alg 0: drift cancels out
    assert (alg0_ms, tuned_ms) == pytest.approx(((timings[0] + timings[3]) / 2, (timings[1] + timings[2]) / 2))
    assert chosen is kept and applied[-1] is kept and len(applied) == 5  # what is left in place is the verdict


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_int8_sweep_verifies_each_alg_and_the_model_keeps_tuned_kernels_only_when_faster():
    from functools import partial

    from edged.bench.sparse_e2e import _graph_ms
    from edged.compile.int8_gemm import calibrated_amax, quantize_linears_
    from edged.compile.int8_tuning import int8_layers, int8_shapes, plan_int8, tuned_in_place_
    from edged.compile.semi_structured import DTYPE, max_rel_error
    from edged.compile.sparse_tuning import random_2_4_linear

    torch.manual_seed(0)
    model = nn.Sequential(random_2_4_linear(1024, 256, True), nn.GELU(), random_2_4_linear(256, 1024, True))
    x = torch.randn(4, 64, 256, device="cuda", dtype=DTYPE)
    with torch.inference_mode():
        reference = model(x)
    quantize_linears_(model, calibrated_amax(model, ["0", "2"], [x]), sparse=True)
    shapes = int8_shapes(model, x)
    assert set(shapes.values()) == {(1024, 256, True, 256), (256, 1024, True, 256)}
    plan = plan_int8(sorted(set(shapes.values())), sweep_algs=4, timeout_s=240)
    for verdict in plan.values():  # alg 0 is every shape's default kernel, so at least it runs and verifies
        assert verdict["verified"] >= 1 and verdict["default_ms"] > 0 and 0 <= verdict["alg_id"] < 4
    with torch.inference_mode():
        info = tuned_in_place_(model, x, 4, plan, partial(_graph_ms, x=x, batch=4))
        out = model(x)
    kept = info["int8_in_place"]["kept"]
    expected = {name: (plan[shapes[name]]["alg_id"] if kept else 0) for name in shapes}
    assert {name: layer.alg_id for name, layer in int8_layers(model).items()} == expected
    assert max_rel_error(out, reference) < 0.05  # the kernels left in place compute the model

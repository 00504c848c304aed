"""edged's cuSPARSELt binding and the per-layer tuning decisions built on it."""

import ctypes

import pytest
import torch

from edged.compile import cusparselt_lib as cl
from edged.compile import semi_structured
from edged.compile.semi_structured import MIN_SPEEDUP, choose, probe, tuning_cases

CUSPARSELT_OK, CUSPARSELT_WHY = probe()


def test_opaque_structs_are_aligned_and_large_enough_for_every_supported_version():
    for _ in range(8):
        block = cl.Opaque()
        assert block.ptr.value % cl.ALIGN_BYTES == 0
        end = block.ptr.value + cl.OPAQUE_BYTES
        assert end <= ctypes.addressof(block._buffer) + ctypes.sizeof(block._buffer)
    assert cl.OPAQUE_BYTES >= 13072  # cuSPARSELt 0.6's structs, the largest


def test_versions_read_as_the_library_writes_them():
    ctx = object.__new__(cl.Context)  # no handle needed to format a number
    for number, text in ((600, "0.6.0"), (801, "0.8.1"), (1000, "0.10.0"), (1_000_203, "1.2.3")):
        ctx.version = number
        assert ctx.version_text == text


def test_every_bound_function_has_typed_pointer_arguments():
    # an untyped ctypes argument is passed as a C int: a 64-bit device pointer would be cut in half
    for name, argtypes in cl.SIGNATURES.items():
        assert name.startswith("cusparseLt") and argtypes
        assert argtypes[0] is ctypes.c_void_p  # the handle, a descriptor or a plan


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_probe_says_why_without_a_gpu():
    ok, why = probe()
    assert not ok and "no CUDA GPU" in why


def test_choose_takes_the_fastest_verified_config_and_stays_dense_where_sparse_loses():
    tried = [{"ms": 0.076, "config": {"alg_id": 0, "split_k": 1, "split_k_mode": 0}},
             {"ms": 0.043, "config": {"alg_id": 27, "split_k": 1, "split_k_mode": 0}},
             {"error": "AcceleratorError: illegal instruction", "worker_broken": True}]
    win = choose(6304, {"ms": 0.047}, tried)
    assert win.sparse and win.config == cl.KernelConfig(alg_id=27) and win.sparse_ms == 0.043
    assert "best of 2 verified configs" in win.reason
    lose = choose(6304, {"ms": 0.043 * MIN_SPEEDUP * 0.99}, tried)
    assert not lose.sparse and lose.config == cl.KernelConfig(alg_id=27)  # measured, but not kept
    none = choose(8, {"ms": 0.01}, tried[2:])
    assert not none.sparse and none.config is None and "illegal instruction" in none.reason
    cutlass = choose(6304, {"ms": 0.047}, [*tried, {"ms": 0.030, "kernel": "cutlass", "config": None}])
    assert cutlass.sparse and cutlass.kernel == "cutlass" and cutlass.config is None and "CUTLASS" in cutlass.reason
    broken = choose(8, {"error": "boom"}, tried)
    assert not broken.sparse and "dense timing failed: boom" in broken.reason


def test_tuning_cases_are_alg_major_and_respect_each_shapes_alg_count():
    a, b = (64, 32, True, 8), (128, 64, False, 16)
    cases = tuning_cases([a, b], {a: 3, b: 2}, iters=5)
    assert [(c["alg_id"], c["feature_major"], c["out"]) for c in cases] == [
        (0, False, 64), (0, False, 128), (0, True, 64), (0, True, 128), (1, False, 64), (1, False, 128),
        (1, True, 64), (1, True, 128), (2, False, 64), (2, True, 64)]  # both output layouts of every alg id
    assert all(c["op"] == "alg" for c in cases)
    # one worker group per (alg id, layout): a layout that breaks a worker does not take the other down with it
    assert {c["group"] for c in cases if c["alg_id"] == 0} == {"alg 0", "alg 0 feature-major"}
    assert tuning_cases([a], {a: 0}, iters=5) == []  # dense timing failed: nothing to sweep


def test_configurations_that_broke_a_worker_are_not_tried_again(monkeypatch):
    a = (64, 32, True, 8)
    monkeypatch.setattr(semi_structured, "broken_configs", {(1, True)})
    cases = tuning_cases([a], {a: 3}, iters=5)
    assert [(c["alg_id"], c["feature_major"]) for c in cases] == [(0, False), (0, True), (1, False), (2, False), (2, True)]


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_plan_matches_dense_and_is_built_once_per_token_count():
    from edged.compile.semi_structured import SemiSparseLinear, random_2_4_linear

    layer = random_2_4_linear(64, 128, bias=True)
    for feature_major in (True, False):  # D written (out, T) row-major and copied, or (T, out) row-major at once
        sparse = SemiSparseLinear(layer.weight, layer.bias, cl.KernelConfig(feature_major=feature_major))
        with torch.inference_mode():
            for tokens in (8, 21, 8, 200):  # 21 is padded to 24; 200 spans several tiles of the copy
                x = torch.randn(tokens, 128, device="cuda", dtype=torch.float16)
                y = sparse(x)
                assert y.is_contiguous()
                torch.testing.assert_close(y, layer(x), atol=2e-2, rtol=2e-2)
        assert sorted(sparse.plans) == [8, 24, 200]
    # cuSPARSELt's own search (cusparseLtMatmulSearch) is not called here: on an H100 (cuSPARSELt 0.8.0, torch
    # 2.11.0+cu130) it failed with status 7 in a fresh process, in either layout, and left the CUDA context broken
    # for every later test. Tuning runs it only inside worker processes (tests/compile/test_gpu_backends.py).
    plan = sparse.plans[8]
    assert plan.max_alg_id >= 1
    with pytest.raises(cl.CusparseLtError, match=r"plan for \(8, 128\)"):
        plan(torch.randn(16, 128, device="cuda", dtype=torch.float16))
    with pytest.raises(cl.CusparseLtError, match="2-D fp16/bf16 CUDA weight"):
        cl.CompressedWeight(torch.zeros(64, 128))

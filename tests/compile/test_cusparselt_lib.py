"""edged's cuSPARSELt binding and the per-layer tuning decisions built on it."""

import ctypes
from dataclasses import asdict

import pytest
import torch

from edged.compile import cusparselt_lib as cl
from edged.compile import sparse_tuning
from edged.compile.semi_structured import probe, reads_feature_major
from edged.compile.sparse_tuning import MIN_SPEEDUP, LayerChoice, choose, tuning_cases

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


def test_choose_keeps_the_fastest_kernel_per_input_and_output_layout():
    def row(ms, alg, out_fm=False, in_fm=False):
        return {"ms": ms, "config": {"alg_id": alg, "split_k": 1, "split_k_mode": 0, "feature_major": out_fm,
                                     "input_feature_major": in_fm}}

    tried = [row(0.050, 1), row(0.040, 2, out_fm=True), row(0.030, 3, in_fm=True), row(0.045, 4, out_fm=True, in_fm=True),
             row(0.060, 5, out_fm=True)]
    win = choose(8192, {"ms": 0.1}, tried)
    # a row-major input's kernel never comes from a feature-major input's timing, however fast
    assert win.config == cl.KernelConfig(alg_id=2, feature_major=True) and win.sparse_ms == 0.040
    assert win.fm_input_config == cl.KernelConfig(alg_id=3, input_feature_major=True)
    assert win.fm_output_config == cl.KernelConfig(alg_id=2, feature_major=True)
    chained = win.chained()
    assert chained is not None and chained.chain_out and chained.config == win.fm_output_config
    assert "chained" in chained.describe()
    assert LayerChoice.from_dict(asdict(chained)) == chained  # what a stored cusparselt plan rebuilds
    only_row = choose(8192, {"ms": 0.1}, [row(0.05, 1)])
    assert only_row.fm_input_config is None and only_row.chained() is None


def test_tuning_cases_are_alg_major_and_respect_each_shapes_alg_count():
    a, b = (64, 32, True, 8), (128, 64, False, 16)
    cases = tuning_cases([a, b], {a: 3, b: 2}, iters=5)
    layouts = [(False, False), (False, True), (True, False), (True, True)]  # (input, output) feature-major
    assert [(c["alg_id"], c["input_feature_major"], c["feature_major"], c["out"]) for c in cases] == [
        (alg, fm_in, fm_out, out) for alg in (0, 1, 2) for fm_in, fm_out in layouts for out in (64, 128)
        if alg < 2 or out == 64]  # every layout of every alg id the shape has
    assert all(c["op"] == "alg" for c in cases)
    # one worker group per (alg id, layout): a layout that breaks a worker does not take the others down with it
    assert {c["group"] for c in cases if c["alg_id"] == 0} == {
        "alg 0", "alg 0 feature-major", "alg 0 from feature-major", "alg 0 from feature-major feature-major"}
    assert tuning_cases([a], {a: 0}, iters=5) == []  # dense timing failed: nothing to sweep


def test_configurations_that_broke_a_worker_are_not_tried_again(monkeypatch):
    a = (64, 32, True, 8)
    monkeypatch.setattr(sparse_tuning, "broken_configs", {(1, True, False), (0, False, True)})
    cases = tuning_cases([a], {a: 2}, iters=5)
    assert [(c["alg_id"], c["feature_major"], c["input_feature_major"]) for c in cases] == [
        (0, False, False), (0, True, False), (0, True, True), (1, False, False), (1, False, True), (1, True, True)]


def test_a_feature_major_input_is_recognised_by_its_strides():
    x = torch.randn(16, 32)  # (T, in) row-major
    assert not reads_feature_major(x)
    assert reads_feature_major(x.t().contiguous().t())  # (T, in) with strides (1, T): a chained layer's D
    assert not reads_feature_major(torch.randn(32, 12).t())  # 12 tokens: not a multiple of 8, never chained
    assert not reads_feature_major(torch.randn(32, 24).t()[:16])  # a padded D cut to its tokens: gaps between


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_plan_matches_dense_and_is_built_once_per_token_count():
    from edged.compile.semi_structured import SemiSparseLinear
    from edged.compile.sparse_tuning import random_2_4_linear

    layer = random_2_4_linear(64, 128, bias=True)
    for feature_major in (True, False):  # D written (out, T) row-major and copied, or (T, out) row-major at once
        sparse = SemiSparseLinear(layer.weight, layer.bias, cl.KernelConfig(feature_major=feature_major))
        with torch.inference_mode():
            for tokens in (8, 21, 8, 200):  # 21 is padded to 24; 200 spans several tiles of the copy
                x = torch.randn(tokens, 128, device="cuda", dtype=torch.float16)
                y = sparse(x)
                assert y.is_contiguous()
                torch.testing.assert_close(y, layer(x), atol=2e-2, rtol=2e-2)
        assert sorted(sparse.plans) == [(8, False), (24, False), (200, False)]
    # cuSPARSELt's own search (cusparseLtMatmulSearch) is not called here: on an H100 (cuSPARSELt 0.8.0, torch
    # 2.11.0+cu130) it failed with status 7 in a fresh process, in either layout, and left the CUDA context broken
    # for every later test. Tuning runs it only inside worker processes (tests/compile/test_gpu_backends.py).
    plan = sparse.plans[(8, False)]
    assert plan.max_alg_id >= 1
    with pytest.raises(cl.CusparseLtError, match=r"plan for \(8, 128\)"):
        plan(torch.randn(16, 128, device="cuda", dtype=torch.float16))
    with pytest.raises(cl.CusparseLtError, match="2-D fp16/bf16 CUDA weight"):
        cl.CompressedWeight(torch.zeros(64, 128))


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_a_chained_pair_hands_its_hidden_activation_over_without_a_copy_and_matches_dense():
    from edged.compile.semi_structured import SemiSparseLinear
    from edged.compile.sparse_tuning import random_2_4_linear

    fc1, fc2 = random_2_4_linear(256, 128, bias=True), random_2_4_linear(128, 256, bias=True)
    fm_out, fm_in = cl.KernelConfig(feature_major=True), cl.KernelConfig(input_feature_major=True)
    sparse1 = SemiSparseLinear(fc1.weight, fc1.bias, fm_out, chain_out=True)
    sparse2 = SemiSparseLinear(fc2.weight, fc2.bias, cl.KernelConfig(), fm_in)
    x = torch.randn(4, 16, 128, device="cuda", dtype=torch.float16)  # (B, N, in): 64 tokens
    with torch.inference_mode():
        hidden = torch.nn.functional.gelu(sparse1(x))  # (B, N, 256) over D (256, 64) row-major
        assert hidden.shape == (4, 16, 256) and hidden.stride() == (16, 1, 64)  # the activation kept the layout
        y = sparse2(hidden)
        assert y.is_contiguous() and sorted(sparse2.plans) == [(64, True)]  # read as it is: no copy, no row plan
        torch.testing.assert_close(y, fc2(torch.nn.functional.gelu(fc1(x))), atol=3e-2, rtol=3e-2)
        # the same layer fed row-major runs its row-major plan; a chained output cut from padded tokens is not
        # read as feature-major (its storage has gaps), so it takes that plan too
        torch.testing.assert_close(sparse2(hidden.contiguous()), y, atol=2e-3, rtol=2e-3)
        odd = torch.randn(21, 128, device="cuda", dtype=torch.float16)
        torch.testing.assert_close(sparse2(torch.nn.functional.gelu(sparse1(odd))), fc2(torch.nn.functional.gelu(fc1(odd))),
                                   atol=3e-2, rtol=3e-2)
    assert sorted(sparse2.plans) == [(24, False), (64, False), (64, True)]
    with pytest.raises(cl.CusparseLtError, match="feature-major, strides"):
        sparse2.plans[(64, True)](torch.randn(64, 256, device="cuda", dtype=torch.float16))

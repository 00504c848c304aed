"""In-place per-layer kernel choice: the greedy rule on given timings (CPU), and on the GPU the
candidates against dense, the fused-transpose output layout that keeps SDPA's fused kernels, and the
whole choice on a small ViT."""

import pytest
import torch

from edged.compile.in_place import CHAINED, DENSE, EDGED, greedy_choice, layer_groups, next_groups, role
from edged.compile.semi_structured import probe
from edged.compile.sparse_tuning import MIN_SPEEDUP

CUSPARSELT_OK, CUSPARSELT_WHY = probe()


def additive_model_ms(dense_ms: dict[str, float], ms: dict[tuple[str, str], float | None]):
    """The model's time = the sum of its groups' times under their kernels; None where a kernel fails."""
    def model_ms(kernels: dict[str, str]) -> tuple[float | None, str]:
        parts = [dense_ms[g] if k == DENSE else ms[(g, k)] for g, k in kernels.items()]
        return (None, "kernel failed") if None in parts else (sum(p for p in parts if p is not None), "")
    return model_ms


def test_role_and_groups_put_one_role_and_shape_together_most_work_first():
    assert role("blocks.11.mlp.fc1") == "blocks.*.mlp.fc1" and role("head") == "head"
    shapes = {"blocks.0.qkv": (96, 32, True, 40), "blocks.1.qkv": (96, 32, True, 40),
              "blocks.0.fc1": (128, 32, True, 40), "blocks.1.fc1": (128, 32, True, 40), "head": (16, 32, True, 2)}
    groups = layer_groups(shapes)
    assert list(groups) == ["blocks.*.fc1 32->128", "blocks.*.qkv 32->96", "head 32->16"]
    assert groups["blocks.*.qkv 32->96"] == ["blocks.0.qkv", "blocks.1.qkv"]


def test_greedy_keeps_only_switches_that_make_the_model_faster():
    dense = {"fc1": 4.0, "qkv": 3.0, "proj": 1.0}
    ms = {("fc1", "torch"): 3.0, ("fc1", "edged"): 2.5,  # edged wins fc1
          ("qkv", "torch"): 3.5, ("qkv", "edged"): None,  # sparse qkv slower; edged's fails verification
          ("proj", "torch"): 0.999, ("proj", "edged"): 1.0}  # faster, but within noise
    choice = greedy_choice(["fc1", "qkv", "proj"], {g: ["torch", "edged"] for g in dense},
                           additive_model_ms(dense, ms))
    assert choice.kernels == {"fc1": "edged", "qkv": DENSE, "proj": DENSE}
    assert choice.dense_ms == 8.0 and choice.best_ms == 6.5
    assert [t.kept for t in choice.trials] == [False, True, False, False, False, False]
    assert choice.trials[3].ms is None and choice.trials[3].error == "kernel failed"


def test_greedy_never_ends_slower_than_dense():
    dense = {"a": 1.0, "b": 1.0}
    ms = {("a", "torch"): 1.0 * MIN_SPEEDUP, ("b", "torch"): 5.0}
    choice = greedy_choice(["a", "b"], {"a": ["torch"], "b": ["torch"]}, additive_model_ms(dense, ms))
    assert choice.kernels == {"a": DENSE, "b": DENSE} and choice.best_ms == choice.dense_ms


def test_kernels_that_no_longer_beat_dense_at_the_end_are_given_up_for_dense():
    calls = []

    def slowing_ms(kernels: dict[str, str]) -> tuple[float | None, str]:
        calls.append(dict(kernels))
        sparse = kernels["a"] == "torch"
        if len(calls) <= 5:  # dense, then a's trial: sparse a is 10 % faster
            return (0.9 if sparse else 1.0), ""
        return (1.2 if sparse else 1.0), ""  # then it slows down (a clock that moved, a throttled kernel)

    choice = greedy_choice(["a"], {"a": ["torch"]}, slowing_ms)
    assert choice.trials[0].kept  # it won its trial
    assert [c["a"] for c in calls[5:]] == [DENSE, "torch", "torch", DENSE]  # the end: beside dense, paired
    assert choice.kernels == {"a": DENSE} and choice.best_ms == choice.dense_ms == 1.0
    assert "1.200 ms against dense 1.000 ms" in choice.given_up
    kept = greedy_choice(["a"], {"a": ["torch"]}, additive_model_ms({"a": 1.0}, {("a", "torch"): 0.9}))
    assert kept.kernels == {"a": "torch"} and kept.given_up is None and kept.best_ms == 0.9


def test_a_clock_that_drifts_between_timings_does_not_pick_a_kernel_that_is_no_faster():
    calls = []

    def drifting_ms(kernels: dict[str, str]) -> tuple[float | None, str]:
        calls.append(dict(kernels))
        return 10.0 - 0.1 * len(calls), ""  # every kernel equally fast; the clock speeds up by 1 % a call

    choice = greedy_choice(["fc1"], {"fc1": ["torch"]}, drifting_ms)
    # timed in place, switched, switched, in place: the drift cancels, so the equal kernel is not kept
    assert [c["fc1"] for c in calls[1:5]] == [DENSE, "torch", "torch", DENSE]
    assert choice.kernels == {"fc1": DENSE} and not choice.trials[0].kept
    assert choice.trials[0].ms == pytest.approx(choice.trials[0].base_ms)


def test_a_chained_group_is_also_tried_as_a_pair_with_the_group_after_it():
    shapes = {"blocks.0.fc1": (128, 32, True, 40), "blocks.0.fc2": (32, 128, True, 40),
              "blocks.1.fc1": (128, 32, True, 40), "blocks.1.fc2": (32, 128, True, 40), "head": (16, 32, True, 2)}
    groups = layer_groups(shapes)
    fc1, fc2, head = "blocks.*.fc1 32->128", "blocks.*.fc2 128->32", "head 32->16"
    assert next_groups(groups, list(shapes)) == {fc1: fc2, fc2: fc1}  # the head's next Linear: none

    def model_ms(kernels: dict[str, str]) -> tuple[float | None, str]:
        # a chained fc1 only pays off when fc2 reads its layout (edged's binding); alone it costs more than dense
        chain = kernels[fc1] == CHAINED and kernels[fc2] == EDGED
        ms = {DENSE: 4.0, EDGED: 3.8, CHAINED: 4.1}[kernels[fc1]] + {DENSE: 4.0, EDGED: 3.6}[kernels[fc2]]
        return ms - (1.5 if chain else 0.0) + 1.0, ""

    choice = greedy_choice(list(groups), {fc1: [EDGED, CHAINED], fc2: [EDGED], head: []}, model_ms,
                           partners=next_groups(groups, list(shapes)))
    assert choice.kernels == {fc1: CHAINED, fc2: EDGED, head: DENSE}
    pair = [t for t in choice.trials if t.partner]
    assert [(t.kernel, t.partner, t.kept) for t in pair] == [(CHAINED, {fc2: EDGED}, True)]
    assert choice.best_ms == 4.1 + 3.6 - 1.5 + 1.0
    # without partners (one switch at a time) the chain is never found
    alone = greedy_choice(list(groups), {fc1: [EDGED, CHAINED], fc2: [EDGED], head: []}, model_ms)
    assert alone.kernels == {fc1: EDGED, fc2: EDGED, head: DENSE} and alone.best_ms > choice.best_ms


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_torch_and_edged_2_4_linears_return_dense_layout_and_values():
    from edged.compile.semi_structured import DTYPE, SemiSparseLinear, TorchSparseLinear
    from edged.compile.sparse_tuning import random_2_4_linear

    layer = random_2_4_linear(2304, 768, bias=True)
    x = torch.randn(2, 197, 768, device="cuda", dtype=DTYPE)  # 394 tokens: padded for cuSPARSELt
    with torch.inference_mode():
        ref = layer(x)
        for sparse in (TorchSparseLinear(layer.weight, layer.bias), SemiSparseLinear(layer.weight, layer.bias)):
            y = sparse(x)
            assert y.shape == ref.shape and y.stride() == ref.stride(), type(sparse).__name__
            torch.testing.assert_close(y, ref, atol=2e-2, rtol=2e-2)
            # timm's attention: q, k, v views of the qkv output keep a unit last-dim stride (SDPA's fused kernels)
            q = y.reshape(2, 197, 3, 12, 64).permute(2, 0, 3, 1, 4)[0]
            assert q.stride(-1) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_in_place_choice_on_a_small_vit_matches_dense():
    from edged.bench.vit import VitEncoder, VitShape, prune_by_magnitude_
    from edged.compile.in_place import choose_in_place_
    from edged.compile.semi_structured import DTYPE, linear_shapes
    from edged.compile.sparse_tuning import plan_layers

    model = VitEncoder(VitShape(dim=256, depth=2, heads=4, mlp=1024, image=64, patch=8, classes=16))
    prune_by_magnitude_(model)
    model = model.to("cuda", DTYPE).eval()
    x = torch.randn(8, 3, 64, 64, device="cuda", dtype=DTYPE)
    with torch.inference_mode():
        ref = model(x)
        shapes, _ = linear_shapes(model, x)
        plan = plan_layers(sorted(set(shapes.values())), iters=5, timeout_s=90, sweep_algs=4)  # alg ids 0-3
        choice = choose_in_place_(model, x, batch=8, iters=5, plan=plan)
        out = model(x)
    tried = {(t.group.split()[0], t.kernel) for t in choice.trials}
    assert ("blocks.*.fc1", "torch") in tried and ("blocks.*.qkv", "torch") in tried
    assert all(t.ms is not None for t in choice.trials if t.kernel == "torch"), choice.trials  # verified vs dense
    # each kept switch beat what it replaced, timed beside it (separate timings of the whole drift on a GPU)
    assert all(t.base_ms / t.ms >= MIN_SPEEDUP for t in choice.trials if t.kept)
    kept = [t for t in choice.trials if t.kept]
    assert kept or (set(choice.kernels.values()) == {DENSE} and choice.best_ms == choice.dense_ms)
    torch.testing.assert_close(out, ref, atol=5e-2, rtol=5e-2)

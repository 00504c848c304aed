"""The training memory plan, in this process: probes leave the model as it was, a generous budget keeps the
whole batch without recomputation, an impossible one fails naming the smallest budget that would work.
(A job held to its budget, measured from outside the worker: tests/jobs/test_training_budget.py.)"""

from __future__ import annotations

import re

import pytest
import torch

from edged.calibrate.memory import cpu_peak_measurable
from edged.errors import OutOfBudget
from edged.train.loop import TrainSettings
from edged.train.memory_plan import HEADROOM, _fewest_fitting, _fitting_candidates, fastest, plan_training, probe_step
from tiny_model import tiny_classifier

pytestmark = pytest.mark.skipif(not cpu_peak_measurable(), reason="no resettable peak RSS (/proc/self/clear_refs)")

SETTINGS = TrainSettings(epochs=1, batch_size=8, lr=0.01, head_lr=0.01, train_norm_layers=True)


def _model_and_data():
    model = tiny_classifier()
    params = dict(model.named_parameters())
    return model, params, torch.randn(12, 3, 16, 16), torch.randint(0, 10, (12,))


def test_a_probe_leaves_values_statistics_and_random_streams_as_they_were():
    model, params, x, y = _model_and_data()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    rng = torch.get_rng_state()
    measured = probe_step(model, params, x[:8], y[:8], SETTINGS, torch.device("cpu"))
    assert measured.peak_mb > 0 and measured.step_s > 0
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and all(p.grad is None for p in params.values())


def test_a_generous_budget_trains_the_whole_batch_without_recomputation():
    model, params, x, y = _model_and_data()
    plan = plan_training(model, params, (x, y), SETTINGS, torch.device("cpu"), budget_mb=1_000_000)
    assert (plan.policy, plan.micro_batch) == ("none", 8)
    assert plan.summary()["accumulation_steps"] == 1 and list(plan.probe_peaks_mb) == ["none@1", "none@2", "none@4",
                                                                                     "none@8"]
    assert plan.summary()["probe_step_ms"].keys() == plan.probe_peaks_mb.keys()


def test_an_impossible_budget_names_the_smallest_that_would_work():
    model, params, x, y = _model_and_data()
    with pytest.raises(OutOfBudget) as error:
        plan_training(model, params, (x, y), SETTINGS, torch.device("cpu"), budget_mb=1)
    smallest = int(re.search(r"the smallest that would work is (\d+) MB", error.value.message).group(1))
    peak = error.value.detail["probe_peaks_mb"]["none@1"]  # a flat CNN has no blocks: 'none' is its only policy
    assert smallest >= peak / HEADROOM > 1 and error.value.detail["accepted"] == f"memory_budget_mb >= {smallest}"


@pytest.mark.parametrize("limit, fewest", [(145.0, 8), (100.0, 12), (1000.0, 1), (131.0, 9)])
def test_the_fewest_checkpointed_blocks_that_fit_are_found_without_probing_far_over_the_limit(limit, fewest):
    """12 blocks, each one left out of checkpointing keeps 10 MB more (100 MB with all 12 checkpointed)."""
    probed: list[int] = []

    def peak_at(count: int) -> float:
        probed.append(count)
        return 100.0 + 10.0 * (12 - count)

    assert _fewest_fitting(peak_at, 12, limit) == fewest
    over = [k for k in probed if 100.0 + 10.0 * (12 - k) > limit]
    assert len(over) <= 1 and len(probed) <= 5, probed  # read off the line, not walked block by block


# Peaks of a 4-block model at micro-batches 1..8: 'none' fits 4 of 8, each policy after it keeps less.
PEAKS = {"none": 40.0, "compute_dtype": 38.0, "recompute_mlp": 20.0, "recompute_attn": 19.0, "checkpoint_blocks": 8.0}


def _four_blocks() -> torch.nn.Module:
    return torch.nn.Sequential(*(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
                                 for _ in range(4)))


def _synthetic_peak(policy: str, micro: int) -> float:
    """MB: 10 fixed plus the policy's per-sample activations; checkpointing K of 4 blocks keeps (4 - K) blocks'
    worth of recompute_mlp's activations on top of checkpoint_blocks'."""
    if policy.startswith("checkpoint_blocks:"):
        kept = 4 - int(policy.split(":")[1])
        return 10.0 + micro * (PEAKS["checkpoint_blocks"] + kept * (PEAKS["recompute_mlp"] - 8.0) / 4)
    return 10.0 + micro * PEAKS[policy]


def test_every_policy_is_a_candidate_at_its_largest_fitting_micro_batch_and_checkpointing_at_its_fewest_blocks():
    probed: list[str] = []

    def probe(policy: str, micro: int) -> float:
        probed.append(f"{policy}@{micro}")
        return _synthetic_peak(policy, micro)

    candidates = _fitting_candidates(_four_blocks(), list(PEAKS), [1, 2, 4, 8], probe, base=10.0, limit=180.0)
    # none 170 MB at 4 (330 at 8), recompute_mlp 170 at 8, checkpoint_blocks:1 at 8 (10 + 8 * 17 = 146)
    assert candidates == [("none", 4), ("compute_dtype", 4), ("recompute_mlp", 8), ("recompute_attn", 8),
                          ("checkpoint_blocks:1", 8)]
    over = [key for key in probed if _synthetic_peak(key.split("@")[0], int(key.split("@")[1])) > 180.0]
    assert over == [] and len(set(probed)) <= 14, probed  # sizes extrapolated not to fit are skipped (probes cache)


def test_where_nothing_recomputed_fits_the_whole_batch_no_other_policy_is_probed():
    probed: list[str] = []

    def probe(policy: str, micro: int) -> float:
        probed.append(policy)
        return _synthetic_peak(policy, micro)

    assert _fitting_candidates(_four_blocks(), list(PEAKS), [1, 2, 4, 8], probe, base=10.0, limit=1000.0) == [
        ("none", 8)]
    assert set(probed) == {"none"}


def test_the_plan_is_the_fastest_for_the_whole_batch_not_the_first_in_memory_order():
    candidates = [("none", 4), ("recompute_mlp", 8), ("checkpoint_blocks:1", 8)]
    step_ms = {"none@4": 30.0, "recompute_mlp@8": 70.0, "checkpoint_blocks:1@8": 55.0}
    assert fastest(candidates, step_ms, batch=8) == ("checkpoint_blocks:1", 8)  # none: 2 x 30 = 60 ms a batch
    assert fastest(candidates, {**step_ms, "none@4": 25.0}, batch=8) == ("none", 4)
    assert fastest(candidates, {**step_ms, "checkpoint_blocks:1@8": 60.0, "none@4": 30.0}, batch=8) == ("none", 4)

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
from edged.train.memory_plan import HEADROOM, _fewest_fitting, plan_training, probe_peak_mb
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
    peak = probe_peak_mb(model, params, x[:8], y[:8], SETTINGS, torch.device("cpu"))
    assert peak > 0
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and all(p.grad is None for p in params.values())


def test_a_generous_budget_trains_the_whole_batch_without_recomputation():
    model, params, x, y = _model_and_data()
    plan = plan_training(model, params, (x, y), SETTINGS, torch.device("cpu"), budget_mb=1_000_000)
    assert (plan.policy, plan.micro_batch) == ("none", 8)
    assert plan.summary()["accumulation_steps"] == 1 and "none@8" in plan.probe_peaks_mb


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

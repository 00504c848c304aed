"""A job's training step replayed from a CUDA graph: when a run gets one, that a graphed run trains as the eager
run does (the epoch's last, smaller batch eager), and that a step a graph cannot hold leaves the job eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edged.train.graphed_step import MIN_FULL_STEPS, graphed_step
from edged.train.loop import TrainSettings, job_graphed_step, train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")


def _loss_of(x, y):
    return torch.zeros(())


def test_a_run_gets_a_graph_only_on_cuda_when_asked_and_with_enough_full_batches():
    cuda = torch.device("cuda")
    assert graphed_step(_loss_of, [], torch.device("cpu"), True, 1000, 10, 2) == (None, "off: cpu has no CUDA graphs")
    assert graphed_step(_loss_of, [], cuda, False, 1000, 10, 2) == (None, "off: not asked for")
    few, why = graphed_step(_loss_of, [], cuda, True, MIN_FULL_STEPS * 10 - 1, 20, 2)  # 7 full batches an epoch
    assert few is None and why.startswith("off: 14 full batches")
    step, state = graphed_step(_loss_of, [], cuda, True, MIN_FULL_STEPS * 10, 20, 2)
    assert step is not None and state == "warming up"
    assert step.takes(torch.zeros(20)) and not step.takes(torch.zeros(7))  # a last, smaller batch runs eagerly
    assert step.takes({"y": torch.zeros(20), "teacher": torch.zeros(20, 3)})


def test_a_cpu_job_has_no_step_to_share_with_its_search():
    model, params, _ = _problem(torch.device("cpu"))
    assert job_graphed_step(model, params, _settings(amp=True), torch.device("cpu"), 200) is None


@pytest.mark.gpu
@needs_cuda
def test_a_job_shares_one_step_only_where_its_search_and_training_can_replay_one_capture():
    device = torch.device("cuda")
    model, params, data = _problem(device)
    shared = job_graphed_step(model, params, _settings(amp=False), device, 200)
    assert shared is not None and shared.state == "warming up"
    assert job_graphed_step(model, params, _settings(amp=False), device, 200, distills=True) is None
    assert job_graphed_step(model, params, _settings(amp=False, cuda_graph=False), device, 200) is None
    assert job_graphed_step(model, params, _settings(amp=False), device, 20) is None  # too few full batches
    result = train(model, params, {"2.weight", "2.bias"}, data, data, _settings(amp=False), device, shared_step=shared)
    assert result.cuda_graph == "captured" and shared.state == "captured"


def test_a_job_under_a_training_memory_budget_steps_eagerly_as_its_plan_was_measured():
    from edged.train.memory_plan import TrainingPlan, unbudgeted_plan

    settings = _settings(amp=True)
    assert unbudgeted_plan(settings).applied_to(settings).cuda_graph
    assert not TrainingPlan(512.0, "none", 16, 16).applied_to(settings).cuda_graph


def test_a_cpu_job_reports_why_it_trained_without_a_graph():
    model, params, data = _problem(torch.device("cpu"))
    result = train(model, params, {"2.weight", "2.bias"}, data, data, _settings(amp=False), torch.device("cpu"))
    assert result.cuda_graph == "off: cpu has no CUDA graphs"


class _ReadsBack(nn.Module):
    """A layer whose forward reads a value back to the host, which no CUDA graph can hold."""

    def forward(self, x):
        return x * (1.0 if float(x.abs().sum()) >= 0 else 0.0)


def _problem(device: torch.device, reads_back: bool = False):
    torch.manual_seed(0)
    middle = nn.Sequential(_ReadsBack(), nn.Dropout(0.1)) if reads_back else nn.GELU()  # dropout draws random numbers
    model = nn.Sequential(nn.Linear(12, 32), middle, nn.Linear(32, 3)).to(device)
    x = torch.randn(200, 12)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return model, dict(model.named_parameters()), (x, y)


def _settings(amp: bool, cuda_graph: bool = True) -> TrainSettings:
    # 200 samples in batches of 16: 12 full batches and one of 8 an epoch, 24 full batches over the run
    return TrainSettings(epochs=2, batch_size=16, lr=1e-2, head_lr=1e-2, patience=5, amp=amp, cuda_graph=cuda_graph)


@pytest.mark.gpu
@needs_cuda
def test_a_graphed_run_trains_as_the_eager_run_does():
    device = torch.device("cuda")
    trained = {}
    for cuda_graph in (False, True):
        model, params, data = _problem(device)
        result = train(model, params, {"2.weight", "2.bias"}, data, data, _settings(False, cuda_graph), device)
        trained[cuda_graph] = (result, {n: p.detach().clone() for n, p in params.items()})
    assert trained[True][0].cuda_graph == "captured" and trained[False][0].cuda_graph == "off: not asked for"
    for name, value in trained[False][1].items():
        torch.testing.assert_close(trained[True][1][name], value, rtol=1e-4, atol=1e-5)
    assert trained[True][0].steps == trained[False][0].steps == 26
    eager_losses = [r["train_loss"] for r in trained[False][0].history]
    assert [r["train_loss"] for r in trained[True][0].history] == pytest.approx(eager_losses, rel=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_a_step_no_graph_can_hold_leaves_the_job_eager_and_training():
    device = torch.device("cuda")
    model, params, data = _problem(device, reads_back=True)
    before = {n: p.detach().clone() for n, p in params.items()}
    result = train(model, params, {"2.weight", "2.bias"}, data, data, _settings(amp=True), device)
    assert result.cuda_graph.startswith("failed: ") and result.steps == 26  # its dropout kept drawing after it
    assert any(not torch.equal(before[n], p) for n, p in params.items())
    assert result.best_accuracy > 0.5
    assert torch.rand(4, device=device).shape == (4,)  # the process's generator works after the failed capture

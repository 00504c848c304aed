"""Automatic learning rates (`lr: "auto"`): the search stays inside its sample budget, reads only training
samples, leaves the model as it found it, and a job records what it chose; with the head refit (a job's
default) it scores each trial by a refit probe and searches the backbone's rate."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError

from edged.data.preprocess import preprocess_images
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig
from edged.methods import get_method
from edged.pipeline.split import LabelledInputs, split_task
from edged.pipeline.stages import ADAPT_STAGES, run_stages
from edged.pipeline.state import AdaptRun
from edged.pipeline.timer import StageTimer
from edged.train import lr_search
from edged.train.graphed_step import WARM_UP
from edged.train.loop import TrainSettings, job_graphed_step
from edged.train.lr_search import BUDGET_FRACTION, Candidate, candidate_grid, carve
from tiny_model import tiny_classifier

TASKEDGE_LR = get_method("taskedge").default_lr


def _preprocess(task):
    return preprocess_images(task.x, image_size=16)


def _auto(task, workdir=None, **options):
    # 16 epochs of 320 training samples: 2,304 forward passes, enough for the whole grid (~47 samples a rung-0 trial)
    config = AdaptConfig(**{"method": "taskedge", "epochs": 16, "batch_size": 32, "budget": 0.01, "device": "cpu",
                            "patience": 2, **options})
    events: list[dict] = []
    return adapt(tiny_classifier(), _preprocess, task, config, on_progress=events.append, workdir=workdir), events


def test_the_search_stays_within_its_budget_and_records_its_choice(digits_task):
    """Without the refit: the whole 6-point grid, scored by the trained head."""
    result, events = _auto(digits_task, refit_head=False)
    search = result.metrics["lr_search"]
    assert search["scored_by"] == "trained head"
    train_samples = result.metrics["train_samples"]
    assert search["budget_forwards"] == int(BUDGET_FRACTION * 16 * train_samples * 3)
    assert 0 < 3 * search["samples"] < search["forwards"] <= search["budget_forwards"]  # training and scoring passes
    assert sum(t["samples"] for t in search["trials"]) == search["samples"]
    grid = {(c.lr, c.head_lr) for c in candidate_grid(TASKEDGE_LR, 1e-3, True, True)}
    assert {(t["lr"], t["head_lr"]) for t in search["trials"] if t["rung"] == 0} == grid
    assert (search["lr"], search["head_lr"]) in grid
    assert [e for e in events if e["type"] == "lr_trial"] == [{"type": "lr_trial", **t} for t in search["trials"]]
    assert result.history[0]["type"] == "epoch"  # training itself ran after the search, at the chosen rates
    assert search["cuda_graph"] == "off: trials step eagerly"  # a CPU job has no graph to share


def _searchable(device):
    """The tiny CNN with every parameter trainable (the head at its own rate), at 16 epochs of batches of 32."""
    model = tiny_classifier().to(device)
    settings = TrainSettings(epochs=16, batch_size=32, lr=TASKEDGE_LR, head_lr=1e-3, seed=0, amp=device.type == "cuda")
    return model, dict(model.named_parameters()), settings


def _direct_search(digits_inputs, device, searchable=None, **options):
    """The search itself over the 400 digits, the whole 6-point grid."""
    model, params, settings = searchable or _searchable(device)
    return lr_search.search_learning_rates(model, params, {n for n in params if n.startswith("head")}, digits_inputs,
                                           settings, candidate_grid(TASKEDGE_LR, 1e-3, True, True), device, **options)


def test_bounded_in_time_the_search_stops_before_a_trial_it_cannot_afford_and_keeps_the_defaults(digits_inputs):
    """`time_fraction` 0: the first trial always runs, none after it; rung 0 is not complete, so the defaults."""
    search = _direct_search(digits_inputs, torch.device("cpu"), time_fraction=0.0)
    assert len(search.trials) == 1 and search.trials[0]["rung"] == 0
    assert search.stopped.startswith("time: ") and "0 % of training's expected time" in search.stopped
    assert search.chosen == Candidate(TASKEDGE_LR, 1e-3) and search.summary()["stopped"] == search.stopped
    assert search.trials[0]["seconds"] > 0 and search.trials[0]["samples_per_s"] > 0
    unbounded = _direct_search(digits_inputs, torch.device("cpu"))
    assert unbounded.stopped is None and len(unbounded.trials) > 6  # every rung


def test_the_time_gate_compares_spent_and_next_trial_seconds_with_trainings_expected_time():
    gate = lr_search.TimeGate(0.15, train_samples=10_000, started=time.perf_counter() - 0.5)
    trials = [{"samples_per_s": 1000.0, "seconds": 0.5, "samples": 100}]  # training expected to take 10 s: 1.5 s here
    assert gate.why_stop([], 10**6) is None  # the first trial always runs
    assert gate.why_stop(trials, 100) is None  # 0.5 s spent + ~0.5 s
    assert "would pass 1.50 s, 15 % of training's expected time" in gate.why_stop(trials, 400)  # + ~2 s
    faster = [*trials, {"samples_per_s": 4000.0, "seconds": 0.1, "samples": 100}]  # training then takes 2.5 s: 0.375 s
    assert gate.why_stop(faster, 100) is not None


def test_the_time_gate_does_not_count_the_shared_graphs_setup_which_training_would_pay_anyway():
    gate = lr_search.TimeGate(0.15, train_samples=10_000, started=time.perf_counter() - 1.0)
    # the first trial warmed up and captured the graph: 0.7 s of its 0.8
    trials = [{"samples_per_s": 1000.0, "seconds": 0.8, "samples": 100, "graph_setup_s": 0.7}]  # budget: 1.5 s
    assert gate.why_stop(trials, 400, setup_s=0.7) is None  # 0.3 s of its own spent, + 4 x 0.1 s
    assert "0.30 s spent" in gate.why_stop(trials, 1300, setup_s=0.7)  # + 1.3 s passes 1.5 s
    # a trial's rate leaves the setup out too: 224 samples in 0.30 s of loop, 0.20 s of it setup -> 2,240/s, not 747/s
    assert lr_search.rate_without_setup(224, 224 / 0.30, 0.20) == pytest.approx(2240.0)
    assert lr_search.rate_without_setup(224, 224 / 0.30, 0.0) == pytest.approx(224 / 0.30)
    assert lr_search.rate_without_setup(224, 224 / 0.30, 0.35) == pytest.approx(224 / 0.30)  # nothing left: as is
    plain = lr_search.TimeGate(0.15, train_samples=10_000, started=time.perf_counter() - 1.0)
    assert "1.00 s spent" in plain.why_stop([{**trials[0], "graph_setup_s": 0.0}], 400)  # nothing credited: 1 + 3.2


def test_on_a_gpu_a_trial_trains_whole_batches_where_enough_samples_remain():
    assert lr_search._whole_batches(224, 128) == 128  # not 128 + an eager 96
    assert lr_search._whole_batches(256, 128) == 256
    assert lr_search._whole_batches(327, 32) == 320
    assert lr_search._whole_batches(100, 128) == 100  # under one batch: as it is
    assert lr_search._whole_batches(40, 24) == 40  # 24 would be under MIN_TRIAL_SAMPLES


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_on_a_gpu_the_trials_replay_the_jobs_graph_and_score_as_eager_trials_do(digits_inputs, digits_task):
    """One captured step for the search and training: the trials warm it up and replay it, and score and choose as
    eager trials do (the same arithmetic, launched at once); through the pipeline, a job with a graph bounds its
    search in time as well and says whether that stopped it."""
    device = torch.device("cuda")
    eager = _direct_search(digits_inputs, device)
    model, params, settings = searchable = _searchable(device)
    shared = job_graphed_step(model, params, settings, device, len(digits_inputs[1]))
    assert shared is not None
    graphed = _direct_search(digits_inputs, device, searchable, shared_step=shared)
    assert graphed.cuda_graph == "captured" and eager.cuda_graph == "off: trials step eagerly"
    for mine, theirs in zip(graphed.trials, eager.trials, strict=True):
        assert (mine["lr"], mine["head_lr"], mine["samples"]) == (theirs["lr"], theirs["head_lr"], theirs["samples"])
        assert abs(mine["accuracy"] - theirs["accuracy"]) <= 2 / lr_search.MAX_CHECK  # bf16 sums in another order
    assert graphed.chosen == eager.chosen
    assert 0 < graphed.graph_setup_s < graphed.seconds and eager.graph_setup_s == 0.0  # the trials set the graph up
    assert graphed.graph_setup_s > 0  # the trials' first full batches warmed up and captured the step
    assert graphed.graph_setup_steps == WARM_UP + 1 and graphed.graph_setup_s == pytest.approx(shared.setup_s())
    # trials of one batch (32 of the 400 digits' 320): the first three warm up before the replay that measures them
    # is timed, so each trial's own credit is what was known when it ended, and the search's is the whole
    assert sum(t["graph_setup_s"] for t in graphed.trials) <= graphed.graph_setup_s + 1e-9
    assert all(t["samples"] % settings.batch_size == 0 for t in graphed.trials + eager.trials)  # whole batches
    metrics = _auto(digits_task, device="cuda", refit_head=False)[0].metrics
    assert metrics["train_cuda_graph"] == "captured"
    assert metrics["lr_search"]["stopped"] is None or metrics["lr_search"]["stopped"].startswith("time: ")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_on_a_gpu_setup_steps_the_trials_ran_before_training_captured_are_credited_once_it_has(digits_task):
    """Trials of one batch of 128 each (the refit's two rates, 8 epochs of 320 samples): each runs one eager warm-up
    step (the time gate may stop the search after the first), and training runs the rest and the capture. The job's
    search is credited those steps' excess, which is known only once training's capture has timed a replay."""
    result = _auto(digits_task, device="cuda", epochs=8, batch_size=128, patience=8)[0]
    search = result.metrics["lr_search"]
    assert result.metrics["train_cuda_graph"] == "captured"
    assert [t["samples"] for t in search["trials"]] in ([128], [128, 128])
    assert search["graph_setup_steps"] == len(search["trials"]) < WARM_UP + 1
    assert all(t["graph_setup_s"] == 0.0 for t in search["trials"])  # the replay they are measured by came later
    assert 0 < search["graph_setup_s"] < search["seconds"]


def test_the_search_never_reads_the_validation_split(digits_task):
    """Every trial of the search is the same whatever the reported validation split holds: replacing its
    inputs with noise and its labels with a permutation changes nothing the search measured or chose."""
    config = AdaptConfig(method="taskedge", epochs=16, batch_size=32, budget=0.01, device="cpu", patience=1)
    split = split_task(digits_task, _preprocess, config.val_fraction, config.seed, config.calibration_samples,
                       config.batch_size, torch.device("cpu"))
    noise = torch.Generator().manual_seed(1)
    scrambled = replace(split, val=LabelledInputs(torch.randn(split.val.inputs.shape, generator=noise),
                                                  split.val.labels[torch.randperm(len(split.val), generator=noise)]))

    def search_on(data_split) -> dict:
        run = AdaptRun(config, get_method("taskedge"), torch.device("cpu"), StageTimer(None), model=tiny_classifier(),
                       preprocess=_preprocess, task=digits_task, split=data_split)
        run_stages(run, ADAPT_STAGES)
        assert run.lr_search is not None
        return run.lr_search

    def measured(trials: list[dict]) -> list[dict]:  # a trial's seconds and loop rate are the clock's, not the data's
        return [{k: v for k, v in t.items() if k not in ("seconds", "samples_per_s")} for t in trials]

    plain, blind = search_on(split), search_on(scrambled)
    assert plain["trials"] and measured(plain["trials"]) == measured(blind["trials"])
    assert (plain["lr"], plain["head_lr"]) == (blind["lr"], blind["head_lr"])


def test_the_search_carves_its_validation_from_the_training_samples_only():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    fit, check = carve(labels, seed=0)
    assert sorted(torch.cat([fit, check]).tolist()) == list(range(16))  # a partition of the training samples
    assert set(labels[check].tolist()) == {0, 1}  # a one-sample class stays in the fitting part
    assert torch.equal(carve(labels, seed=0)[1], check)


def test_a_model_is_left_as_the_search_found_it(digits_task):
    """Trials restore the trainable tensors and the buffers (BatchNorm statistics): full fine-tuning with
    train-mode norm layers (bn_bias) after a search equals the same run with the chosen rates given."""
    searched, _ = _auto(digits_task, method="bn_bias")
    rates = searched.metrics["lr_search"]
    assert rates["trials"]
    given, _ = _auto(digits_task, method="bn_bias", lr=rates["lr"], head_lr=rates["head_lr"])
    for (name, a), b in zip(searched.model.state_dict().items(), given.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_small_budgets_keep_the_defaults_and_say_why(digits_task):
    result, _ = _auto(digits_task.subset(torch.arange(120)), epochs=1)
    search = result.metrics["lr_search"]
    assert search["trials"] == [] and "budget" in search["skipped"]
    assert (search["lr"], search["head_lr"]) == (TASKEDGE_LR, 1e-3)  # taskedge's default, the head's default


def test_rates_are_numbers_auto_or_the_methods_default():
    assert AdaptConfig().lr == "auto" and AdaptConfig().head_lr == "auto"
    assert AdaptConfig(lr=None).lr is None
    for bad in ({"lr": "fast"}, {"head_lr": 0}, {"lr": 2.0}, {"method": "head", "lr": 0.01}):
        with pytest.raises(ValidationError):
            AdaptConfig(**bad)
    assert AdaptConfig(method="head", lr="auto").lr == "auto"
    assert Candidate(1.0, 2.0).head_lr == 2.0


def test_head_warmup_fits_the_head_first_and_says_so(digits_task):
    """LP-FT: the head is a linear probe before the sparse entries train (recorded with its holdout choice)."""
    result, events = _auto(digits_task, epochs=2, lr=3e-2, head_lr=3e-2, head_warmup=True)
    warmup = result.metrics["head_warmup"]
    assert warmup["cached_features"] and warmup["weight_decay"] > 0
    kinds = [e["type"] for e in events]
    assert "head_warmup_epoch" in kinds and kinds.index("head_warmup_epoch") < kinds.index("epoch")
    with pytest.raises(ValidationError, match="head_warmup applies"):
        AdaptConfig(method="head", head_warmup=True)


def test_a_budget_too_small_for_the_grid_tries_only_the_heads_rates(digits_task):
    """3 epochs of 320 samples: 432 forward passes, too few for the 6-point grid's 9 trials, enough for the head's
    two rates (about 50 samples each). Without the refit: with it, the head's rate is not searched."""
    result, _ = _auto(digits_task, epochs=3, refit_head=False)
    search = result.metrics["lr_search"]
    assert search["skipped"] is None and {(t["lr"], t["head_lr"]) for t in search["trials"]} == {(TASKEDGE_LR, 1e-3),
                                                                                          (TASKEDGE_LR, 1e-2)}
    first, second = (t["samples"] for t in search["trials"])
    assert first == second >= 32 and search["forwards"] <= search["budget_forwards"]


def test_a_resumed_run_keeps_its_chosen_rates_without_searching_again(digits_task, tmp_path):
    """The choice is kept in the work dir (lr_search.safetensors): an interrupted job that runs again trains on
    at the rates it chose, with no second search (no lr_trial events)."""
    first, _ = _auto(digits_task, epochs=3, workdir=tmp_path)
    assert (tmp_path / "lr_search.safetensors").exists() and first.metrics["lr_search"]["trials"]
    again, events = _auto(digits_task, epochs=3, workdir=tmp_path)
    def choice(metrics: dict) -> dict:  # the seconds the resumed run's training took are its own
        return {k: v for k, v in metrics["lr_search"].items() if k != "fraction_of_train_time"}

    assert choice(again.metrics) == choice(first.metrics)
    assert not [e for e in events if e["type"] == "lr_trial"]


def test_with_the_refit_the_search_tries_the_backbone_rates_at_the_same_cost(digits_task):
    """The head refit after training (the default): the backbone's rate at 1/4 and 1 x taskedge's default, the
    head at its default; every trial ranked by its probe accuracy (its trained head's kept beside it), and the
    probe costs no forward pass: the same job without the refit gives its two trials the same samples."""
    refit, _ = _auto(digits_task, epochs=3)
    search = refit.metrics["lr_search"]
    assert search["scored_by"] == "refit probe" and search["skipped"] is None
    assert [(t["lr"], t["head_lr"]) for t in search["trials"]] == [(TASKEDGE_LR / 4, 1e-3), (TASKEDGE_LR, 1e-3)]
    assert all(0 <= t["trained_head_accuracy"] <= 1 for t in search["trials"])
    best = max(search["trials"], key=lambda t: (t["accuracy"] + t["prior"], -t["loss"]))
    assert (search["lr"], search["head_lr"]) == (best["lr"], best["head_lr"])
    assert search["trials"][0]["prior"] == 0.0 < search["trials"][1]["prior"] or search["trials"][1]["accuracy"] == 1.0
    plain = _auto(digits_task, epochs=3, refit_head=False)[0].metrics["lr_search"]
    assert [t["samples"] for t in search["trials"]] == [t["samples"] for t in plain["trials"]]
    assert search["forwards"] == plain["forwards"] <= search["budget_forwards"] == plain["budget_forwards"]


def test_a_trial_for_a_refit_job_is_ranked_by_the_probe_on_its_features(digits_task, monkeypatch):
    """The probe decides, not the trained head: a stand-in probe that scores the second trial 1.0 and the
    first 0.0 makes the search choose the second, whatever the trained heads scored; it is handed the
    trial's backbone features (search-validation samples x the tiny model's 64) and their labels."""
    calls: list[tuple[torch.Size, torch.Tensor]] = []

    def probe(features, labels, classes, decay, folds, iterations):
        calls.append((features.shape, labels))
        return float(len(calls) - 1), 0.0

    monkeypatch.setattr(lr_search, "cross_validated_probe", probe)
    search = _auto(digits_task, epochs=3)[0].metrics["lr_search"]
    assert [t["accuracy"] for t in search["trials"]] == [0.0, 1.0]
    assert (search["lr"], search["head_lr"]) == (search["trials"][1]["lr"], search["trials"][1]["head_lr"])
    assert [shape[1] for shape, _ in calls] == [64, 64] and calls[0][0][0] == len(calls[0][1]) > 0
    calls.clear()
    _auto(digits_task, epochs=3, refit_head=False)
    assert calls == []  # no refit: the trained head ranks the trials


@pytest.mark.parametrize("scores, chosen", [((0.80, 0.78), 1), ((0.95, 0.60), 0)])
def test_the_default_rate_gives_way_only_to_a_rate_that_wins_by_more_than_the_scoring_noise(
        digits_task, monkeypatch, scores, chosen):
    """Trials are [default / 4, default]. A lead of 2 points on ~100 scored samples is inside one binomial standard
    error (~4 points), so the default stays; a lead of 35 points is not, so the other rate is chosen."""
    calls: list[int] = []

    def probe(features, labels, classes, decay, folds, iterations):
        calls.append(len(labels))
        return scores[len(calls) - 1], 0.5

    monkeypatch.setattr(lr_search, "cross_validated_probe", probe)
    search = _auto(digits_task, epochs=3)[0].metrics["lr_search"]
    default = search["trials"][1]
    assert default["lr"] == TASKEDGE_LR and default["prior"] == pytest.approx((0.78 * 0.22 / calls[1]) ** 0.5
                                                                              if chosen else (0.6 * 0.4 / calls[1]) ** 0.5)
    assert search["lr"] == search["trials"][chosen]["lr"]


def test_with_the_refit_a_given_backbone_rate_leaves_nothing_to_search():
    assert candidate_grid(5e-3, 1e-3, False, True, refit_head=True) == [Candidate(5e-3, 1e-3)]
    assert candidate_grid(5e-3, 1e-3, True, True, refit_head=True) == [Candidate(1.25e-3, 1e-3), Candidate(5e-3, 1e-3)]

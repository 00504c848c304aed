"""Automatic learning rates for unattended jobs (`lr: "auto"`, `head_lr: "auto"`): successive halving over a
small grid of (backbone lr, head lr), on a part carved from the training split.

Nobody tunes a board in the field by hand, so the defaults are the product. The search never reads the
validation split that reports the job's accuracy: it splits the TRAINING samples again (stratified, its own
seed) into a search-train and a search-validation part (at most MAX_CHECK samples of it score a trial). Its
cost is bounded in forward passes: all trials' training (TRAIN_COST forwards a sample) and scoring passes
together cost at most `budget_fraction` of the job's training (epochs x training samples x TRAIN_COST). Each
trial starts from the same state (the trainable tensors and every buffer, BatchNorm running statistics
included, are restored after it), so the job then trains as if the search had not run, only with the chosen
rates.

Successive halving: rung 0 trains every candidate on n0 samples, each later rung keeps the better half
(search-validation accuracy, ties to the lower loss) and doubles the samples, until one is left. The defaults
(the rates in `settings`, each method's measured best) rank with one binomial standard error of the scoring set
added to their accuracy: another rate replaces them only when it wins by more than the noise of ~128 scored
samples (measured: trials of 66-84 % often within a few samples of each other picked 1/4 of the default on 2 of 3
seeds on the 8x8 digits, 97.3 % against 98.4 % at the default). Where the
budget cannot give every candidate of the grid MIN_TRIAL_SAMPLES, only the head's rates are tried.

Where the job's training replays a CUDA graph (`time_fraction`, set by the pipeline for a job with a shared graphed
step), a forward pass costs a trial more than it costs training: a trial's few steps run eagerly while the graph
warms up, and its scoring pass and probe are fixed costs (H100, MiniLM on BBC News: two trials took 54-56 % of a
0.56 s training). The search is then also bounded in time (`TimeGate`): before each trial after the first, if
what it has spent plus the next trial's expected seconds would pass `time_fraction` of training's expected time,
it stops, keeping the last complete rung's leader, or the defaults if rung 0 is not complete. The shared graph's
setup steps that the trials run (`GraphedStep.setup_s`: the eager warm-ups and the capture, beyond the replays they
stand in for) are not counted: training would pay them, and skips them (`SearchResult.graph_setup_s`; where the
trials end before the capture, the excess is known only once training has captured, and the job fills it in then).
On a GPU a trial trains whole batches (`_whole_batches`): a partial one costs a whole step there, and steps eagerly.

With the head refit after training (`refit_head`, a job's default), the job reports a linear probe on the adapted
backbone's features, not the head AdamW trained: the search then ranks each trial by a probe too, cross-validated
on the search-validation features its scoring pass computes anyway (no forward pass more, so the budget and the
trials' lengths are unchanged), and searches the backbone's rate instead of the head's (`candidate_grid`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.data.task import Inputs, stratified_split, take
from edged.train.evaluate import accuracy_of
from edged.train.head_fit import cross_validated_probe, extract_features
from edged.train.graphed_step import GraphedStep
from edged.train.loop import TrainSettings, train

DEFAULT_HEAD_LR = 1e-3  # the head's rate where a job gives none and does not search
BUDGET_FRACTION = 0.15  # the bound: the search costs at most ~15 % of the job's training
SEARCH_VAL_FRACTION = 0.2  # share of the training samples the search validates on
MIN_TRIAL_SAMPLES = 32  # below this a trial says nothing; the search then keeps the defaults
TRAIN_COST = 3  # forward passes a training sample costs (forward + backward, about twice a forward)
MAX_CHECK = 128  # search-validation samples a trial is scored on (its scoring pass is part of the budget)
PROBE_DECAY = 1e-3  # the trial probe's weight decay: one of the refit's; a ranking needs no choice of its own
PROBE_FOLDS = 4  # a trial probe fits on 3/4 of the search-validation features, is scored on the other 1/4, x4
PROBE_ITERATIONS = 10  # L-BFGS iterations a trial probe's fit takes (its time is outside the forward budget): on
# MobileNetV2 features of 128 digits or MNIST digits, 16 draws each, 0.07 s a trial against 0.18 s at 25 and 0.2-0.6 s
# converged, accuracies a few samples from the converged fit's either way (it overfits them)


@dataclass(frozen=True)
class Candidate:
    lr: float  # the backbone part's
    head_lr: float


@dataclass
class SearchResult:
    chosen: Candidate
    trials: list[dict] = field(default_factory=list)  # per trial: rung, lr, head_lr, samples, accuracy, loss
    samples: int = 0  # training samples the trials consumed
    forwards: int = 0  # their cost in forward passes: TRAIN_COST a training sample, 1 a scored sample
    budget_forwards: int = 0
    seconds: float = 0.0
    skipped: Optional[str] = None  # why no trial ran (then `chosen` is the defaults)
    scored_by: str = "trained head"  # what a trial's accuracy and loss are of: "trained head" or "refit probe"
    cuda_graph: str = "off: no trial ran"  # the shared step's state after the trials, or why they stepped eagerly
    stopped: Optional[str] = None  # why the time bound ended the search early (`TimeGate`), when it did
    graph_setup_s: float = 0.0  # of `seconds`, the shared graph's setup steps' excess, which training then skips
    graph_setup_steps: int = 0  # how many of the shared graph's setup steps the trials ran

    def summary(self) -> dict:
        return {"lr": self.chosen.lr, "head_lr": self.chosen.head_lr, "trials": self.trials, "samples": self.samples,
                "forwards": self.forwards, "budget_forwards": self.budget_forwards, "seconds": self.seconds,
                "skipped": self.skipped, "scored_by": self.scored_by, "cuda_graph": self.cuda_graph,
                "stopped": self.stopped, "graph_setup_s": self.graph_setup_s, "graph_setup_steps": self.graph_setup_steps}


@dataclass
class TimeGate:
    """The search's bound in time (module docstring): `time_fraction` of training's expected seconds, training being
    `train_samples` (epochs x training samples) at the fastest loop rate a trial reached, the shared graph's setup
    left out of it (a trial's steps after the setup replay the graph training replays; where a trial stepped eagerly,
    training with its graph is expected to take longer than it will: the bound then errs towards searching)."""

    time_fraction: float
    train_samples: int
    started: float

    def why_stop(self, trials: list[dict], next_samples: int, setup_s: float = 0.0) -> Optional[str]:
        """Why the next trial (of `next_samples`) would pass the bound, or None; the first trial always runs.
        `setup_s`: the shared graph's setup the trials have paid so far, as far as it is known (`GraphedStep.setup_s`),
        not the search's own cost: the job's training would pay it, and now skips it."""
        if not trials:
            return None
        last = trials[-1]
        budget_s = self.time_fraction * self.train_samples / max(max(t["samples_per_s"] for t in trials), 1e-9)
        next_s = (last["seconds"] - last.get("graph_setup_s", 0.0)) * next_samples / max(last["samples"], 1)
        spent = time.perf_counter() - self.started - setup_s
        if spent + next_s <= budget_s:
            return None
        return (f"time: {spent:.2f} s spent, and the next trial (~{next_s:.2f} s) would pass {budget_s:.2f} s, "
                f"{100 * self.time_fraction:.0f} % of training's expected time")


def candidate_grid(default_lr: float, default_head_lr: float, search_lr: bool, search_head_lr: bool,
                   refit_head: bool = False) -> list[Candidate]:
    """The rates tried: the method's default backbone lr, 1/4 and 1/16 of it, and the head's default
    and ten times it (a linear head on frozen features wants a larger step than the shared default), each
    only where it is "auto".

    With `refit_head` the trained head is replaced after training, so its rate only matters through what it
    does to the backbone's: the head stays at its default (the lower) rate and the backbone's is tried at 1/4
    and 1 x its default. Measured on taskedge 0.1 %, 1,000 digits and MNIST, 2 epochs, 6 seeds (README, "The
    hand grid with the refit"): at those two backbone rates head_lr 1e-3 ended 0.5-2.0 points above 1e-2 on
    both (our reading: a slow head keeps the loss, so the backbone's gradient, large, and the backbone part does
    the learning the refit reads; LP-FT, a fitted head first, losing here fits it). Rates above the default
    are not tried: with the budget shared by rows, 4 x the default then (0.02) lost 4-9 points on MNIST, where
    a trial of a few steps scored by a probe ranked it first on 3-5 of the 6 seeds; the sparse methods' default
    is now that rate (0.02), which, shared by mass, trained best."""
    if refit_head:
        return [Candidate(lr, default_head_lr) for lr in ([default_lr / 4, default_lr] if search_lr else [default_lr])]
    lrs = [default_lr / 16, default_lr / 4, default_lr] if search_lr else [default_lr]
    head_lrs = [default_head_lr, default_head_lr * 10] if search_head_lr else [default_head_lr]
    return [Candidate(lr, head_lr) for lr in lrs for head_lr in head_lrs]


def carve(labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """(search-train, search-validation) indices into the training samples: stratified as the job's own split
    is, deterministic, from a stream of its own (not the job's split)."""
    generator = torch.Generator().manual_seed(seed + 7919)
    return stratified_split(labels, labels.unique().tolist(), SEARCH_VAL_FRACTION, generator)


def search_learning_rates(model: nn.Module, params: dict[str, nn.Parameter], head_names: set[str],
                          train_data: tuple[Inputs, Tensor], settings: TrainSettings, candidates: list[Candidate],
                          device: torch.device, on_trial: Optional[Callable[[dict], None]] = None,
                          budget_fraction: float = BUDGET_FRACTION, refit_head: bool = False,
                          shared_step: Optional[GraphedStep] = None, time_fraction: Optional[float] = None
                          ) -> SearchResult:
    """The best candidate by successive halving on the training samples only (module docstring); the rates
    in `settings` (the defaults) where the budget is too small to try any. With `refit_head` each trial is
    scored by a probe refit on its backbone's features, as the job will be. With `shared_step` (the job's,
    `loop.job_graphed_step`) the trials' full batches replay the graph the job's training replays; with
    `time_fraction` the search is also bounded in time (`TimeGate`)."""
    # The first optimizer a process builds imports torch._dynamo (about 1 s here): a cost the job's training
    # pays anyway, paid before the clock starts so the search's seconds are its own.
    torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
    started = time.perf_counter()
    inputs, labels = train_data
    budget = int(budget_fraction * settings.epochs * int(labels.shape[0]) * TRAIN_COST)  # in forward passes
    fit, check = carve(labels, settings.seed)
    check = check[torch.randperm(len(check), generator=torch.Generator().manual_seed(settings.seed + 2))][:MAX_CHECK]
    candidates = _affordable(candidates, settings, budget, len(check))
    n0 = _first_rung_samples(len(candidates), budget, len(check))
    if device.type == "cuda":
        n0 = _whole_batches(n0, settings.batch_size)
    scored_by = "refit probe" if refit_head else "trained head"
    if len(candidates) == 1 or n0 < MIN_TRIAL_SAMPLES:
        reason = "one candidate" if len(candidates) == 1 else (
            f"the budget ({budget} forward passes) leaves under {MIN_TRIAL_SAMPLES} training samples a trial")
        return SearchResult(Candidate(settings.lr, settings.head_lr), budget_forwards=budget, skipped=reason,
                            scored_by=scored_by)
    order = fit[torch.randperm(len(fit), generator=torch.Generator().manual_seed(settings.seed + 1))]
    snapshot = _snapshot(model, params)
    result = SearchResult(candidates[0], budget_forwards=budget, scored_by=scored_by)
    alive, samples, rung = list(candidates), n0, 0
    default = Candidate(settings.lr, settings.head_lr)
    gate = None if time_fraction is None else TimeGate(time_fraction, settings.epochs * int(labels.shape[0]), started)
    steps_before = _setup_steps(shared_step)
    while len(alive) > 1:
        scored = []
        for candidate in alive:
            setup_s = _setup_since(shared_step, steps_before)
            result.stopped = gate.why_stop(result.trials, samples, setup_s) if gate is not None else None
            if result.stopped:
                break
            trial = _trial(model, params, head_names, (inputs, labels), order, check, samples, settings, candidate,
                           device, refit_head, shared_step)
            _restore_(model, params, snapshot)
            scored.append((*_recorded(result, trial, rung, candidate == default, len(check), on_trial), candidate))
        if result.stopped:  # the last complete rung's leader (alive is in its order), or the defaults in rung 0
            alive = [default] if rung == 0 else alive[:1]
            break
        scored.sort(key=lambda s: (s[0], s[1]))
        alive = [c for _, _, c in scored[: max(len(alive) // 2, 1)]]
        samples, rung = samples * 2, rung + 1
    result.chosen, result.seconds = alive[0], time.perf_counter() - started
    result.cuda_graph = shared_step.state if shared_step is not None else "off: trials step eagerly"
    result.graph_setup_steps = _setup_steps(shared_step) - steps_before
    result.graph_setup_s = _setup_since(shared_step, steps_before)
    return result


def _recorded(result: SearchResult, trial: dict, rung: int, is_default: bool, checks: int,
              on_trial: Optional[Callable[[dict], None]]) -> tuple[float, float]:
    """`trial` added to `result` (its samples and forward passes counted, the default's prior noted) and announced;
    its ranking key: (minus accuracy with the prior, loss)."""
    prior = _standard_error(trial["accuracy"], checks) if is_default else 0.0
    trial.update(rung=rung, prior=prior)
    result.trials.append(trial)
    result.samples += trial["samples"]
    result.forwards += TRAIN_COST * trial["samples"] + checks
    if on_trial is not None:
        on_trial(trial)
    return -(trial["accuracy"] + prior), trial["loss"]


def _standard_error(accuracy: float, samples: int) -> float:
    """One binomial standard error of an accuracy (a fraction) measured on `samples` samples."""
    return (accuracy * (1.0 - accuracy) / max(samples, 1)) ** 0.5


def _affordable(candidates: list[Candidate], settings: TrainSettings, budget: int, checks: int) -> list[Candidate]:
    """The grid, or where its trials would get under MIN_TRIAL_SAMPLES each, only the head's rates at the
    default backbone rate (two trials: a small job's head rate matters most, a head left at too small a rate
    trains far too slowly in a few epochs)."""
    if _first_rung_samples(len(candidates), budget, checks) >= MIN_TRIAL_SAMPLES:
        return candidates
    heads = [c for c in candidates if c.lr == settings.lr]
    return heads if len(heads) > 1 else candidates


def _first_rung_samples(candidates: int, budget: int, checks: int) -> int:
    """n0: training samples a rung-0 trial gets so that the whole search, training (TRAIN_COST forwards a
    sample) and every trial's scoring pass over `checks` samples, fits in `budget` forward passes. Rung r
    trains its candidates on n0 * 2^r each, halving them (rounded down, at least one) until one is left."""
    units, trials, alive, scale = 0, 0, candidates, 1
    while alive > 1:
        units, trials = units + alive * scale, trials + alive
        alive, scale = max(alive // 2, 1), scale * 2
    return (budget - trials * checks) // (TRAIN_COST * max(units, 1))


def _whole_batches(samples: int, batch_size: int) -> int:
    """`samples` rounded down to whole batches, where at least MIN_TRIAL_SAMPLES remain. On a GPU a small model's
    step costs about the same at any batch (its launches, or one graph replay), so a trial's partial batch would
    cost a whole step for part of its samples, and it steps eagerly beside a shared graph (MiniLM on BBC News,
    H100: trials of 128 + 96 articles, the 96 eager)."""
    whole = samples - samples % batch_size
    return whole if whole >= MIN_TRIAL_SAMPLES else samples


def _trial(model: nn.Module, params: dict[str, nn.Parameter], head_names: set[str], train_data: tuple[Inputs, Tensor],
           order: Tensor, check: Tensor, samples: int, settings: TrainSettings, candidate: Candidate,
           device: torch.device, refit_head: bool, shared_step: Optional[GraphedStep]) -> dict:
    """One candidate trained on `samples` search-train samples (the first of `order`, cycled when there are
    fewer), then scored on the search-validation samples: by its trained head, or with `refit_head` by a probe
    cross-validated on its backbone's features of them (the trained head's accuracy kept beside it)."""
    started, (inputs, labels) = time.perf_counter(), train_data
    steps_before = _setup_steps(shared_step)
    chosen = order.repeat(-(-samples // len(order)))[:samples]  # cycles through them when a trial wants more
    trial_settings = replace(settings, epochs=1, lr=candidate.lr, head_lr=candidate.head_lr, checkpoint_dir=None)
    check_inputs, check_labels = take(inputs, check), labels[check]
    no_validation = (take(inputs, check[:0]), labels[check[:0]])  # scored once below, not by the loop as well
    trained = train(model, params, head_names, (take(inputs, chosen), labels[chosen]), no_validation, trial_settings,
                    device, shared_step=shared_step)
    setup = _setup_since(shared_step, steps_before)  # this trial's own setup steps' excess, as far as it is known now
    rate = rate_without_setup(len(chosen), trained.samples_per_s, setup)  # TimeGate's estimate of training's rate
    features = extract_features(model, check_inputs, max(settings.batch_size, 64), device)  # (check, D)
    head = model.get_submodule("head")
    with torch.no_grad():
        logits = head(features).float().cpu()  # one pass: the trained head's logits and the probe's features
    trial = {"lr": candidate.lr, "head_lr": candidate.head_lr, "samples": len(chosen),
             "accuracy": accuracy_of(logits, check_labels), "loss": float(F.cross_entropy(logits, check_labels)),
             "samples_per_s": rate}  # the trial's training loop's own rate, the graph's setup left out
    if refit_head:  # on the CPU: (128, D) features are too few for a GPU, where each L-BFGS iteration is a few tiny
        # kernels and host reads (MiniLM's 384, H100: 0.11-0.14 s a trial, the search's largest part; 2-core CPU: 0.035 s)
        probe = cross_validated_probe(features.cpu(), check_labels.cpu(), logits.shape[1], PROBE_DECAY, PROBE_FOLDS,
                                      PROBE_ITERATIONS)
        trial = {**trial, "accuracy": probe[0], "loss": probe[1], "trained_head_accuracy": trial["accuracy"]}
    return {**trial, "seconds": time.perf_counter() - started, "graph_setup_s": setup}


def _setup_steps(shared_step: Optional[GraphedStep]) -> int:
    return shared_step.setup_steps if shared_step is not None else 0


def _setup_since(shared_step: Optional[GraphedStep], steps: int) -> float:
    """The excess of the shared graph's setup steps run after its first `steps`, as far as it is known now (the
    capture times the replay it is measured by); 0 without a shared graph."""
    return shared_step.setup_s(since=steps) if shared_step is not None else 0.0


def rate_without_setup(samples: int, loop_rate: float, setup_s: float) -> float:
    """A trial loop's samples/s with the shared graph's setup taken out of its time (the loop's own rate where
    that would leave no time)."""
    own_s = samples / max(loop_rate, 1e-9) - setup_s
    return samples / own_s if own_s > 0 else loop_rate


def _snapshot(model: nn.Module, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    """What a trial can change: the trainable tensors and every buffer (BatchNorm statistics)."""
    state = {f"param:{name}": p.detach().clone() for name, p in params.items()}
    state.update({f"buffer:{name}": b.detach().clone() for name, b in model.named_buffers()})
    return state


@torch.no_grad()
def _restore_(model: nn.Module, params: dict[str, nn.Parameter], snapshot: dict[str, Tensor]) -> None:
    for name, p in params.items():
        p.copy_(snapshot[f"param:{name}"])
    for name, b in model.named_buffers():
        b.copy_(snapshot[f"buffer:{name}"])

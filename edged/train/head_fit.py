"""Head-only training on cached features: the frozen backbone runs once over the training and validation
samples (eval mode, on the job's device), then the head, a Linear on those features, is fit by full-batch
L-BFGS: an L2-regularised multinomial logistic regression, what a linear probe is.

The weight decay is chosen among `WEIGHT_DECAYS` by accuracy on a part carved from the TRAINING samples
(`HOLDOUT_FRACTION`, seeded); the head is then refit on all of them. The validation split is only scored,
never used to choose anything. Features are standardised for the fit (L-BFGS converges in far fewer
iterations) and the scaling is folded back into the head, so the model stays a plain Classifier. The
training loop's epochs, learning rates, schedule and weight decay do not apply here (a job refuses `lr`
and `head_lr` for such a method); one fit is the job's one epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.calibrate.memory import measure_peak
from edged.data.task import Inputs, num_samples, take, to_device
from edged.store.tensor_files import load_tensors, save_tensors_atomic
from edged.train.evaluate import accuracy_of
from edged.train.loop import TrainResult, distill_loss

ProgressCallback = Callable[[dict], None]
WEIGHT_DECAYS = (1e-2, 1e-3, 1e-4, 1e-5)  # L2 on the head's weight per mean loss (sklearn's C=1: 1/(2N)),
# tried from the strongest: each fit starts from the previous one's solution (a regularisation path), so the
# weaker ones converge in a few iterations
HOLDOUT_FRACTION = 0.2  # share of the training samples the weight decay is chosen on
ITERATIONS_PER_STEP = 25  # L-BFGS iterations between progress events (a cancel acts between them)
STEPS_PER_FIT = 4  # so at most 100 iterations per fit (fewer once it converges)
TOLERANCE_CHANGE = 1e-6  # loss change that ends a fit: on MobileNetV2 features, 1e-10 took 2.4x the time for the same accuracy
FIT_FILE = "head_fit.safetensors"  # the fitted head, in the checkpoint dir: a resumed job does not refit it


@dataclass
class HeadFitSettings:
    seed: int
    batch_size: int  # of the feature extraction pass
    amp_dtype: Optional[torch.dtype] = None
    distill_weight: float = 0.5  # with teacher logits: their share of the loss (as in the training loop)
    distill_temperature: float = 2.0
    checkpoint_dir: Optional[Path] = None


@torch.no_grad()
def extract_features(model: nn.Module, inputs: Inputs, batch_size: int, device: torch.device,
                     amp_dtype: Optional[torch.dtype] = None) -> Tensor:
    """(N, D) float32 features on `device`: the model's `backbone` over `inputs` in eval mode, in batches."""
    backbone, was_training = model.get_submodule("backbone"), model.training
    model.eval()
    parts = []
    try:
        for start in range(0, num_samples(inputs), batch_size):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                parts.append(backbone(to_device(take(inputs, slice(start, start + batch_size)), device)).float())
    finally:
        model.train(was_training)
    return torch.cat(parts)


def _objective(weight: Tensor, bias: Tensor, features: Tensor, labels: Tensor, teacher: Optional[Tensor],
               decay: float, settings: HeadFitSettings) -> Tensor:
    logits = features @ weight.T + bias  # (N, classes)
    target = labels if teacher is None else {"y": labels, "teacher": teacher}
    return distill_loss(logits, target, settings.distill_weight, settings.distill_temperature) + \
        decay * weight.pow(2).sum()


def fit_linear(features: Tensor, labels: Tensor, teacher: Optional[Tensor], decay: float,
               start: tuple[Tensor, Tensor], settings: HeadFitSettings,
               on_step: Callable[[float], None], steps: int = STEPS_PER_FIT,
               iterations: int = ITERATIONS_PER_STEP) -> tuple[Tensor, Tensor, float]:
    """(weight (classes, D), bias (classes,), final loss) of the regularised logistic regression on
    standardised `features` (N, D), by L-BFGS from `start` (the problem is convex: the start only changes how
    soon it converges), at most `steps` x `iterations` iterations. `on_step(loss)` is called every
    `iterations` iterations."""
    weight, bias = (t.detach().clone().requires_grad_(True) for t in start)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=iterations, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=TOLERANCE_CHANGE, line_search_fn="strong_wolfe")

    last = [float("nan")]  # the objective at the latest evaluation

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = _objective(weight, bias, features, labels, teacher, decay, settings)
        loss.backward()
        last[0] = float(loss.detach())
        return loss

    for _ in range(steps):
        done = optimizer.state[weight].get("n_iter", 0)
        optimizer.step(closure)
        on_step(last[0])
        if optimizer.state[weight]["n_iter"] - done < iterations:
            break  # L-BFGS stopped before its iteration cap: converged
    return weight.detach(), bias.detach(), last[0]


def _holdout(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(fit indices, holdout indices) of the n training samples: a seeded permutation's last part held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = n - max(1, int(n * HOLDOUT_FRACTION))
    return order[:cut], order[cut:]


def choose_weight_decay(features: Tensor, labels: Tensor, teacher: Optional[Tensor], classes: int,
                        settings: HeadFitSettings, on_step: Callable[[float], None]
                        ) -> tuple[float, dict[str, float], tuple[Tensor, Tensor]]:
    """The weight decay whose fit on the training samples' fit part scores best on their holdout part (ties:
    the larger decay), every candidate's holdout accuracy, and that fit's (weight, bias) (where the fit on all
    training samples starts). Reads only the training samples."""
    fit, held = _holdout(int(labels.shape[0]), settings.seed)
    fit, held = fit.to(features.device), held.to(features.device)
    scores: dict[str, float] = {}
    solutions = {}
    start = _zeros(classes, features)
    for decay in WEIGHT_DECAYS:
        weight, bias, _ = fit_linear(features[fit], labels[fit], None if teacher is None else teacher[fit], decay,
                                     start, settings, on_step)
        scores[str(decay)] = accuracy_of((features[held] @ weight.T + bias).cpu(), labels[held])
        solutions[decay] = start = (weight, bias)
    best = max(WEIGHT_DECAYS, key=lambda decay: (scores[str(decay)], decay))
    return best, scores, solutions[best]


def cross_validated_probe(features: Tensor, labels: Tensor, classes: int, decay: float, folds: int = 4,
                          iterations: int = STEPS_PER_FIT * ITERATIONS_PER_STEP) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of linear probes on `features` (N, D), each fit as the refit fits one
    (standardised on its own fit part, L-BFGS at `decay`) on all but one of `folds` stratified parts and scored
    on that part: what a head refit on these features would score, from the one pass that computed them. Each
    fit stops after `iterations` L-BFGS iterations, if it has not converged before."""
    n, settings = int(labels.shape[0]), HeadFitSettings(seed=0, batch_size=max(int(labels.shape[0]), 1))
    part = stratified_folds(labels, folds).to(features.device)
    hits, loss = 0.0, 0.0
    for fold in part.unique().tolist():
        fit, held = part != fold, part == fold
        # (D,) each; the biased std, so that a fit part of one sample standardises (to 0) rather than to NaN
        mean, std = features[fit].mean(0), features[fit].std(0, correction=0).clamp_min(1e-6)
        weight, bias, _ = fit_linear((features[fit] - mean) / std, labels[fit], None, decay,
                                     _zeros(classes, features), settings, lambda _: None, 1, iterations)
        logits = (features[held] - mean) / std @ weight.T + bias  # (held, classes)
        hits += accuracy_of(logits.cpu(), labels[held].cpu()) * int(held.sum())
        loss += float(F.cross_entropy(logits, labels[held], reduction="sum"))
    return hits / max(n, 1), loss / max(n, 1)


def stratified_folds(labels: Tensor, folds: int) -> Tensor:
    """(N,) the fold of each sample: the samples grouped by class (each class in its order) and dealt
    round-robin, so every fold holds about 1/folds of every class and of the samples however they are ordered
    (interleaving the samples as they come, ordered by class, can leave a class out of every fit part but one)."""
    part = torch.empty(labels.shape[0], dtype=torch.int64)
    part[torch.argsort(labels.cpu(), stable=True)] = torch.arange(labels.shape[0]) % folds
    return part


def _zeros(classes: int, features: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.zeros(classes, features.shape[1], device=features.device),
            torch.zeros(classes, device=features.device))


@torch.no_grad()
def _set_head_(head: nn.Linear, weight: Tensor, bias: Tensor, mean: Tensor, std: Tensor) -> None:
    """head(x) = W (x - mean) / std + b, folded into a plain Linear: W' = W / std, b' = b - W' mean."""
    folded = weight / std  # (classes, D)
    head.weight.copy_(folded.to(head.weight.dtype))
    head.bias.copy_((bias - folded @ mean).to(head.bias.dtype))


def fit_head_(model: nn.Module, train_inputs: Inputs, train_labels: Tensor, val_inputs: Inputs, val_labels: Tensor,
              settings: HeadFitSettings, device: torch.device, on_progress: Optional[ProgressCallback] = None,
              teacher_logits: Optional[Tensor] = None) -> TrainResult:
    """Fit `model.head` (a Linear) on the frozen backbone's cached features, in place; the validation
    samples are scored with the result, never used to choose it. With a checkpoint dir that holds a fit
    (an interrupted job), that fit is loaded instead."""
    head = model.get_submodule("head")
    assert isinstance(head, nn.Linear), "a Classifier's head is a Linear on the backbone's features"
    stored = _load_fit_(head, settings.checkpoint_dir)
    if stored is not None:
        return stored
    started = time.perf_counter()
    with measure_peak(device) as peak:
        train_x = extract_features(model, train_inputs, settings.batch_size, device, settings.amp_dtype)
        labels = train_labels.to(device)
        teacher = None if teacher_logits is None else teacher_logits.to(device)
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)  # (D,) each
        z, step, total = (train_x - mean) / std, [0], STEPS_PER_FIT * (len(WEIGHT_DECAYS) + 1)

        def on_step(loss: float) -> None:
            step[0] += 1
            if on_progress:
                on_progress({"type": "step", "epoch": 0, "step": step[0], "total_steps": total, "loss": loss,
                             "lr": 1.0})

        decay, selection, start = choose_weight_decay(z, labels, teacher, head.out_features, settings, on_step)
        weight, bias, loss = fit_linear(z, labels, teacher, decay, start, settings, on_step)
        val_x = extract_features(model, val_inputs, settings.batch_size, device, settings.amp_dtype)
        head_before = accuracy_of(head(val_x).float().cpu(), val_labels)  # the head this fit replaces
        _set_head_(head, weight, bias, mean, std)
        val_accuracy = accuracy_of(head(val_x).float().cpu(), val_labels)
    samples_per_s = len(train_labels) / max(time.perf_counter() - started, 1e-9)
    record = {"type": "epoch", "epoch": 0, "train_loss": loss, "val_accuracy": val_accuracy,
              "val_accuracy_head_before": head_before, "samples_per_s": samples_per_s, "weight_decay": decay,
              "holdout_accuracy": selection, "cached_features": True}
    result = TrainResult(val_accuracy, 0, 1, step[0], samples_per_s, peak.mb, [record])
    _save_fit(head, settings.checkpoint_dir, result)
    if on_progress:  # after the checkpoint: an epoch announced is an epoch a restart keeps
        on_progress(record)
    return result


def _save_fit(head: nn.Linear, directory: Optional[Path], result: TrainResult) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        record = result.history[0]
        meta = {key: str(record[key]) for key in ("train_loss", "val_accuracy", "val_accuracy_head_before",
                                                  "samples_per_s", "weight_decay")}
        save_tensors_atomic(directory / FIT_FILE, {"weight": head.weight.detach().cpu(), "bias": head.bias.detach().cpu()},
                            {**meta, "steps": str(result.steps)})


@torch.no_grad()
def _load_fit_(head: nn.Linear, directory: Optional[Path]) -> Optional[TrainResult]:
    """The stored fit copied into `head` and its result, or None (no dir, no file, or another head's shape)."""
    stored = load_tensors(directory / FIT_FILE) if directory is not None else None
    if stored is None or stored.tensors["weight"].shape != head.weight.shape \
            or "val_accuracy_head_before" not in stored.metadata:  # another head, or written by an older edged
        return None
    head.weight.copy_(stored.tensors["weight"])
    head.bias.copy_(stored.tensors["bias"])
    meta = stored.metadata
    val_accuracy, samples_per_s = float(meta["val_accuracy"]), float(meta["samples_per_s"])
    record = {"type": "epoch", "epoch": 0, "train_loss": float(meta["train_loss"]), "val_accuracy": val_accuracy,
              "val_accuracy_head_before": float(meta["val_accuracy_head_before"]), "samples_per_s": samples_per_s,
              "weight_decay": float(meta["weight_decay"]), "cached_features": True}
    return TrainResult(val_accuracy, 0, 1, int(meta["steps"]), samples_per_s, None, [record])

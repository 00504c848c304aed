"""The training loop: AdamW on the trainable part only, warm-up + cosine / one-cycle, AMP on CUDA,
validation every epoch, early stopping, progress callbacks, checkpoints of the trainable part."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.calibrate.memory import measure_peak
from edged.data.task import Inputs, batches, num_samples, take, to_device
from edged.train.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_optimizer_state_,
    optimizer_state,
    save_checkpoint,
)
from edged.train.evaluate import accuracy
from edged.train.graphed_step import GraphedStep, graphed_step
from edged.train.recompute import training_policy
from edged.train.schedule import make_scheduler

ProgressCallback = Callable[[dict], None]
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    head_lr: float
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_fraction: float = 0.1
    patience: int = 3
    seed: int = 0
    amp: bool = True
    train_norm_layers: bool = False
    checkpoint_dir: Optional[Path] = None
    distill_weight: float = 0.5  # share of the loss taken by the teacher's soft targets (when given)
    distill_temperature: float = 2.0
    recompute: str = "none"  # a policy of edged.train.recompute: what backward recomputes instead of keeping
    micro_batch: Optional[int] = None  # samples per forward/backward (gradients accumulate to batch_size)
    cuda_graph: bool = True  # on CUDA, replay the full batches' forward and backward from one CUDA graph


@dataclass
class TrainResult:
    best_accuracy: float
    best_epoch: int
    epochs_run: int
    steps: int
    samples_per_s: float
    peak_memory_mb: Optional[float]
    history: list[dict] = field(default_factory=list)
    cuda_graph: str = "off: no training step (the head fitted on features)"  # GraphedStep.state, or why none


def amp_dtype(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def set_train_mode(model: nn.Module, train_norm_layers: bool) -> None:
    """Train mode, except BatchNorm statistics stay frozen unless the method adapts them."""
    model.train()
    if not train_norm_layers:
        for module in model.modules():
            if isinstance(module, _NORM_LAYERS):
                module.eval()


def trainable_state(params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in params.items()}


def train(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    head_names: set[str],
    train_data: tuple[Inputs, Tensor],
    val_data: tuple[Inputs, Tensor],
    settings: TrainSettings,
    device: torch.device,
    on_progress: Optional[ProgressCallback] = None,
    teacher_logits: Optional[Tensor] = None,
    shared_step: Optional[GraphedStep] = None,
) -> TrainResult:
    """Train `params` (named; head parameters named in `head_names` use head_lr). Restores the best epoch.

    With `shared_step` (`job_graphed_step`: one graph for a job's search trials and its training) the full batches
    replay that; without, the run decides on its own graph (`settings.cuda_graph`).

    With `teacher_logits` (N, classes), aligned with the training samples, the loss mixes cross-entropy
    with the KL divergence to the teacher's softened outputs (weight and temperature in `settings`).

    With a checkpoint_dir holding `last.safetensors` from an interrupted run, training resumes after that
    epoch with the optimizer state, the schedule and the RNG states where they were, so it ends as an
    uninterrupted run would. `epochs_run` counts the job's epochs, those of the interrupted runs included.
    """
    optimizer = _optimizer(params, head_names, settings)
    inputs, labels = train_data
    targets = labels if teacher_logits is None else {"y": labels, "teacher": teacher_logits}
    steps_per_epoch = -(-int(labels.shape[0]) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = make_scheduler(optimizer, settings.schedule, total_steps, settings.warmup_fraction)
    dtype = amp_dtype(device, settings.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    generator = torch.Generator().manual_seed(settings.seed)
    first_epoch, best = _resume_(settings.checkpoint_dir, params, optimizer, scheduler, steps_per_epoch, generator)
    history: list[dict] = []
    step, seen, busy = first_epoch * steps_per_epoch, 0, 0.0
    graphed, graph_state = (shared_step, "") if shared_step is not None else graphed_step(
        lambda x, y: forward_backward(model, x, y, dtype, settings, scaler), list(params.values()), device,
        settings.cuda_graph, int(labels.shape[0]), settings.batch_size, settings.epochs - first_epoch)
    with measure_peak(device) as peak, training_policy(model, settings.recompute, dtype):
        for epoch in range(first_epoch, settings.epochs):
            if epoch - 1 - best.best_epoch >= settings.patience:
                break  # stopped early (only a resumed run gets here: a fresh one breaks below)
            set_train_mode(model, settings.train_norm_layers)
            started, losses = time.perf_counter(), []
            unread: list[tuple[dict, Callable[[], float]]] = []  # the step queued last, its loss not read yet
            for x, y in batches(inputs, targets, settings.batch_size, generator):
                loss = _step(model, optimizer, scaler, scheduler, to_device(x, device), to_device(y, device), dtype,
                             settings, graphed)
                step, seen = step + 1, seen + num_samples(y)
                unread.append(({"type": "step", "epoch": epoch, "step": step, "total_steps": total_steps,
                                "lr": scheduler.get_last_lr()[0]}, _read_later(loss)))
                if len(unread) > 1:  # step k's loss is read once step k+1 is queued: the device never waits for the host
                    losses.append(_reported(*unread.pop(0), on_progress))
            losses += [_reported(event, read, on_progress) for event, read in unread]
            busy += time.perf_counter() - started
            val_acc = accuracy(model, *val_data, batch_size=max(settings.batch_size, 64), device=device, amp_dtype=dtype)
            record = {"type": "epoch", "epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1),
                      "val_accuracy": val_acc, "samples_per_s": seen / max(busy, 1e-9)}
            history.append(record)
            best = _keep_epoch(settings.checkpoint_dir, params, optimizer, generator, device, epoch, val_acc, best)
            if on_progress:  # after the checkpoint: an epoch announced is an epoch a restart keeps
                on_progress(record)
            if epoch - best.best_epoch >= settings.patience:
                break
    with torch.no_grad():
        for name, value in best.state.items():
            params[name].copy_(value)
    epochs_run = first_epoch + len(history)
    return TrainResult(best.best_accuracy, best.best_epoch, epochs_run, step, seen / max(busy, 1e-9), peak.mb, history,
                       graphed.state if graphed is not None else graph_state)


def job_graphed_step(model: nn.Module, params: dict[str, nn.Parameter], settings: TrainSettings, device: torch.device,
                     samples: int, distills: bool = False) -> Optional[GraphedStep]:
    """One graphed step for a whole job (`train(shared_step=...)`): the learning-rate search's trials replay the
    graph its training replays. Why: the search's budget is counted in forward passes, ~15 % of training's, which
    holds in time only when a trial's step costs what a training step does; with trials eager and training replayed
    (MiniLM-L6 on an H100, ~6x faster a step) the search took about as long as training. The trials share the
    job's batch size, loss and recomputation, and restore the trainable tensors in place, so the graph stays valid.
    None where the job gets no graph (`graphed_step` says why), trains in fp16 (the captured backward would hold one
    run's loss scale) or `distills` (training's targets carry the teacher's logits, the trials' do not, so training
    could not replay a trial's capture): each run there keeps its own step, and the trials stay eager."""
    dtype = amp_dtype(device, settings.amp)
    if dtype == torch.float16 or distills:
        return None
    step, _ = graphed_step(lambda x, y: forward_backward(model, x, y, dtype, settings), list(params.values()), device,
                           settings.cuda_graph, samples, settings.batch_size, settings.epochs)
    return step


def _optimizer(params: dict[str, nn.Parameter], head_names: set[str], settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW over the trainable tensors: the backbone part at `lr`, the head at `head_lr`."""
    groups = [
        {"params": [p for n, p in params.items() if n not in head_names], "lr": settings.lr},
        {"params": [p for n, p in params.items() if n in head_names], "lr": settings.head_lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=settings.weight_decay)


def _keep_epoch(directory: Optional[Path], params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                generator: torch.Generator, device: torch.device, epoch: int, val_acc: float,
                best: Checkpoint) -> Checkpoint:
    """The best epoch so far (this one if it beat it), and in `directory` best.safetensors and
    last.safetensors (the trainable tensors, optimizer and RNG states to resume after this epoch)."""
    if val_acc > best.best_accuracy:
        best = Checkpoint(trainable_state(params), epoch, val_acc, epoch, val_acc)
        if directory:
            save_checkpoint(directory / "best.safetensors", best)
    if directory:
        save_checkpoint(directory / "last.safetensors", Checkpoint(
            dict(params), epoch, val_acc, best.best_epoch, best.best_accuracy,
            optimizer_state(optimizer, params), _rng_states(generator, device)))
    return best


def distill_loss(logits: Tensor, target: Inputs, w: float, t: float) -> Tensor:
    """Cross-entropy on labels, or with a teacher: (1 - w) CE + w T^2 KL(teacher_T || student_T)."""
    if isinstance(target, Tensor):
        return F.cross_entropy(logits, target)
    soft = F.kl_div(F.log_softmax(logits.float() / t, -1), F.log_softmax(target["teacher"].float() / t, -1),
                    log_target=True, reduction="batchmean") * t * t
    return (1 - w) * F.cross_entropy(logits, target["y"]) + w * soft


def _step(model, optimizer, scaler, scheduler, x: Inputs, y: Inputs, dtype: Optional[torch.dtype],
          settings: TrainSettings, graphed: Optional[GraphedStep]) -> Tensor:
    if graphed is not None and graphed.takes(y):
        loss = graphed(x, y)
    else:
        optimizer.zero_grad(set_to_none=True)
        loss = forward_backward(model, x, y, dtype, settings, scaler)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss


def _read_later(loss: Tensor) -> Callable[[], float]:
    """The loss as a float when asked. On CUDA its copy to pinned host memory is queued now and waited for then, so
    reading step k's loss after queueing step k+1 leaves the device busy (a plain read waits for every queued kernel)."""
    if loss.device.type != "cuda":
        return lambda: float(loss)
    host = torch.empty((), dtype=loss.dtype, pin_memory=True)
    host.copy_(loss, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()

    def read() -> float:
        copied.synchronize()
        return float(host)

    return read


def _reported(event: dict, read: Callable[[], float], on_progress: Optional[ProgressCallback]) -> float:
    loss = read()
    if on_progress:
        on_progress({**event, "loss": loss})
    return loss


def forward_backward(model: nn.Module, x: Inputs, y: Inputs, dtype: Optional[torch.dtype], settings: TrainSettings,
                     scaler: Optional[torch.amp.GradScaler] = None) -> Tensor:
    """The batch's loss (detached, on its device: reading it is the caller's choice, as a CUDA graph cannot) and
    its gradients, accumulated over micro-batches of `settings.micro_batch` samples: each micro-batch's mean loss
    is weighted by its share of the batch, so the gradients are the whole batch's (BatchNorm in training mode
    normalises by each micro-batch instead)."""
    n = num_samples(y)
    size = settings.micro_batch or n
    device = (y if isinstance(y, Tensor) else y["y"]).device
    total = torch.zeros((), device=device)
    for first in range(0, n, size):
        part = slice(first, first + size)
        # no cast cache: a CUDA graph cannot hold it, and a forward casts each weight once
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False):
            loss = distill_loss(model(take(x, part)), take(y, part), settings.distill_weight,
                                settings.distill_temperature)
        share = min(size, n - first) / n
        weighted = loss if share == 1 else loss * share
        (scaler.scale(weighted) if scaler is not None else weighted).backward()
        total += loss.detach().float() * share
    return total


def _rng_states(generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """The shuffle generator's and torch's global states (dropout draws from the latter)."""
    states = {"shuffle": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _resume_(directory: Optional[Path], params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
             scheduler, steps_per_epoch: int, generator: torch.Generator) -> tuple[int, Checkpoint]:
    """(first epoch still to run, best so far): from `last` and `best.safetensors` if both fit `params`,
    else (0, the current values). Restores the tensors, the optimizer, the schedule and the RNG states."""
    fresh = Checkpoint(trainable_state(params), -1, -1.0, -1, -1.0)
    last = load_checkpoint(directory / "last.safetensors", params) if directory else None
    best = load_checkpoint(directory / "best.safetensors", params) if directory and last else None
    if last is None or best is None:
        return 0, fresh
    with torch.no_grad():
        for name, value in last.state.items():
            params[name].copy_(value)
    load_optimizer_state_(optimizer, params, last.optimizer)
    with warnings.catch_warnings():  # stepping the schedule before any optimizer step is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range((last.epoch + 1) * steps_per_epoch):
            scheduler.step()
    generator.set_state(last.rng["shuffle"])
    torch.set_rng_state(last.rng["torch"])
    if "cuda" in last.rng:
        torch.cuda.set_rng_state(last.rng["cuda"], next(iter(params.values())).device)
    return last.epoch + 1, best

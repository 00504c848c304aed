"""The training loop: AdamW on the trainable part only, warm-up + cosine / one-cycle, AMP on CUDA,
validation every epoch, early stopping, progress callbacks, checkpoints of the trainable part."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.calibrate.memory import measure_peak
from edged.data.task import Inputs, batches, to_device
from edged.train.evaluate import accuracy
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


@dataclass
class TrainResult:
    best_accuracy: float
    best_epoch: int
    epochs_run: int
    steps: int
    samples_per_s: float
    peak_memory_mb: Optional[float]
    history: list[dict] = field(default_factory=list)


def amp_dtype(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _set_train_mode(model: nn.Module, train_norm_layers: bool) -> None:
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
) -> TrainResult:
    """Train `params` (named; head parameters named in `head_names` use head_lr). Restores the best epoch."""
    groups = [
        {"params": [p for n, p in params.items() if n not in head_names], "lr": settings.lr},
        {"params": [p for n, p in params.items() if n in head_names], "lr": settings.head_lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=settings.weight_decay)
    inputs, labels = train_data
    steps_per_epoch = -(-int(labels.shape[0]) // settings.batch_size)
    scheduler = make_scheduler(optimizer, settings.schedule, steps_per_epoch * settings.epochs, settings.warmup_fraction)
    dtype = amp_dtype(device, settings.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    generator = torch.Generator().manual_seed(settings.seed)
    best = (-1.0, -1, trainable_state(params))
    history, step, seen, busy = [], 0, 0, 0.0
    with measure_peak(device) as peak:
        for epoch in range(settings.epochs):
            _set_train_mode(model, settings.train_norm_layers)
            started, losses = time.perf_counter(), []
            for x, y in batches(inputs, labels, settings.batch_size, generator):
                x, y = to_device(x, device), y.to(device)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step, seen = step + 1, seen + int(y.shape[0])
                losses.append(float(loss.detach()))
                if on_progress:
                    on_progress({"type": "step", "epoch": epoch, "step": step, "total_steps": steps_per_epoch * settings.epochs,
                                 "loss": losses[-1], "lr": scheduler.get_last_lr()[0]})
            busy += time.perf_counter() - started
            val_acc = accuracy(model, *val_data, batch_size=max(settings.batch_size, 64), device=device, amp_dtype=dtype)
            record = {"type": "epoch", "epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1),
                      "val_accuracy": val_acc, "samples_per_s": seen / max(busy, 1e-9)}
            history.append(record)
            if on_progress:
                on_progress(record)
            if val_acc > best[0]:
                best = (val_acc, epoch, trainable_state(params))
                _save_checkpoint(settings.checkpoint_dir, best[2], epoch, val_acc)
            elif epoch - best[1] >= settings.patience:
                break
    with torch.no_grad():
        for name, value in best[2].items():
            params[name].copy_(value)
    return TrainResult(best[0], best[1], len(history), step, seen / max(busy, 1e-9), peak.mb, history)


def _save_checkpoint(directory: Optional[Path], state: dict[str, Tensor], epoch: int, val_acc: float) -> None:
    """Only the trainable part: a few thousand numbers for a sparse method, written atomically."""
    if directory is None:
        return
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "trainable.safetensors.tmp"
    save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(tmp),
              metadata={"epoch": str(epoch), "val_accuracy": f"{val_acc:.6f}"})
    tmp.replace(directory / "trainable.safetensors")

"""Learning-rate schedules as LambdaLR multipliers: linear warm-up + cosine decay, or one-cycle."""

from __future__ import annotations

import math

import torch


def make_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LRScheduler:
    total_steps = max(total_steps, 1)
    if kind == "onecycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=max(warmup_fraction, 0.05)
        )
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

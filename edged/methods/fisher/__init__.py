"""Fisher information (TR-PTS, arXiv 2507.22872): mean squared gradient of the task loss.

Uses mini-batch gradients (the empirical Fisher over batches), which costs one backward per batch
instead of one per sample.
"""

from __future__ import annotations

from torch import Tensor, nn

from edged.methods.base import ScoreConfig, TaskBatches
from edged.methods.gradients import weight_gradients
from edged.methods.registry import register_scorer


@register_scorer("fisher", "Fisher: mean squared gradient of the task loss (TR-PTS)", needs_gradients=True)
def score(model: nn.Module, batches: TaskBatches, config: ScoreConfig) -> dict[str, Tensor]:
    total: dict[str, Tensor] = {}
    count = 0
    for grads in weight_gradients(model, batches):
        for name, g in grads.items():
            total[name] = total[name] + g.square() if name in total else g.square()
        count += 1
    return {name: t / max(count, 1) for name, t in total.items()}

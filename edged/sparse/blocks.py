"""Block units shared across tasks (On-Demand Multi-Task Sparsity, arXiv 2511.19986): each weight, viewed as
(out, fan_in), is cut into 1 x BLOCK segments of a row. A task's delta occupies the blocks holding its entries;
tasks whose masks prefer the blocks earlier tasks on the same base already use keep the union of blocks small,
so a switch between them touches fewer distinct blocks.

Alignment is a nudge on the importance scores, not a constraint: with strength s, an entry in a block that
another task uses scores (1 + s) times its own importance, so the per-neuron top-K still picks the task's most
important entries, preferring shared blocks among near ties.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 16  # entries per block: one 16-wide segment of a row (a 32-byte fp16 / 64-byte fp32 burst)


def blocks_of(shape: torch.Size, flat_indices: Tensor) -> Tensor:
    """(out, ceil(fan_in / BLOCK)) bool: the blocks of a weight of `shape` holding entries `flat_indices`."""
    out = shape[0]
    fan_in = int(torch.Size(shape[1:]).numel())
    used = torch.zeros(out, -(-fan_in // BLOCK), dtype=torch.bool)
    rows, cols = flat_indices // fan_in, flat_indices % fan_in
    used[rows, cols // BLOCK] = True
    return used


def blocks_of_mask(mask: Tensor) -> Tensor:
    """The blocks of a bool mask shaped like its weight."""
    return blocks_of(mask.shape, mask.flatten().nonzero().flatten())


def aligned_scores(scores: dict[str, Tensor], used: dict[str, Tensor], strength: float) -> dict[str, Tensor]:
    """Scores with entries in blocks other tasks use (`used`: layer -> blocks) multiplied by (1 + strength)."""
    out = {}
    for name, score in scores.items():
        if name not in used or strength <= 0:
            out[name] = score
            continue
        flat = score.reshape(score.shape[0], -1)  # (out, fan_in)
        in_used = used[name].to(flat.device).repeat_interleave(BLOCK, dim=1)[:, : flat.shape[1]]  # (out, fan_in)
        out[name] = (flat * (1 + strength * in_used.to(flat.dtype))).reshape(score.shape)
    return out


def union_blocks(masks_by_task: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Layer -> the blocks any of these tasks uses (each task: layer -> its blocks)."""
    union: dict[str, Tensor] = {}
    for task in masks_by_task:
        for name, blocks in task.items():
            union[name] = blocks.clone() if name not in union else union[name] | blocks
    return union


def count_blocks(blocks: dict[str, Tensor]) -> int:
    return int(sum(int(b.sum()) for b in blocks.values()))

"""One 2:4 pattern shared by the tasks on a base (issue 11): which entries of each pruned weight are kept.

When every 2:4 task on a base keeps the same positions, a switch between them changes values only: the
zeros stay where they are, so a compiled model recompresses only the layers whose values changed, and a
TensorRT engine built for the pattern is refitted instead of rebuilt. The pattern comes from the first
2:4 task on the base (its importance, |W| * ||X||_2 on its data), or from the combined importance of
several tasks' calibrations (`combined_importance`); a job may still ask for its own (`share_2_4: false`).

Stored form (`pack_pattern`): safetensors bytes with, per pruned weight, `name::bits` (uint8, the keep-mask
flattened in the weight's layout and bit-packed, 1 bit per entry) and `name::shape` (int64). The bytes are
deterministic, so their sha256 names the pattern (the blob it is stored in).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from edged.errors import Conflict, InvalidInput
from edged.sparse.layers import WeightLayer
from edged.sparse.nm import (
    M_GROUP,
    N_KEEP,
    PruneReport,
    group_nonzeros,
    nm_ineligible_reason,
    nm_keep_mask,
    prune_2_4_,
)


def pack_pattern(keep_masks: dict[str, Tensor]) -> bytes:
    """The keep-masks (name -> bool shaped like the weight) as deterministic, bit-packed safetensors bytes."""
    tensors: dict[str, Tensor] = {}
    for name in sorted(keep_masks):
        tensors[f"{name}::bits"] = pack_keep_mask(keep_masks[name])
        tensors[f"{name}::shape"] = torch.tensor(list(keep_masks[name].shape), dtype=torch.int64)
    return save_safetensors(tensors)


def pack_keep_mask(keep: Tensor) -> Tensor:
    """A keep-mask (bool, any shape) flattened in the weight's layout as (ceil(numel / 8),) uint8, 1 bit per
    entry, big-endian bit order: the stored form here and in a task's delta (edged.pipeline.outputs)."""
    return torch.from_numpy(np.packbits(keep.detach().cpu().to(torch.bool).reshape(-1).numpy()))


def unpack_keep_mask(bits: Tensor, numel: int) -> Tensor:
    """`pack_keep_mask`'s (ceil(numel / 8),) uint8 back to the (numel,) bool keep-mask, flat."""
    return torch.from_numpy(np.unpackbits(bits.numpy(), count=numel).astype(bool))


def unpack_pattern(data: bytes) -> dict[str, Tensor]:
    """`pack_pattern`'s bytes back to name -> bool keep-mask shaped like the weight."""
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed bytes
        raise InvalidInput(f"not a stored 2:4 pattern: {exc}") from exc
    masks = {}
    for key, bits in tensors.items():
        name, _, part = key.rpartition("::")
        if part != "bits":
            continue
        shape = tuple(int(s) for s in tensors[f"{name}::shape"].tolist())
        masks[name] = unpack_keep_mask(bits, int(np.prod(shape))).reshape(shape)
    return masks


def pattern_id(data: bytes) -> str:
    """The pattern's name: the sha256 of its stored bytes (also the name of the blob holding it)."""
    return hashlib.sha256(data).hexdigest()


def combined_importance(scores_by_task: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """One importance per weight from several tasks' (|W| * ||X||_2 on each task's calibration data).

    Each task's score of a layer is divided by its mean first: ||X||_2 grows with the number of calibration
    samples and with the task's input scale, and no task should outvote the others for that reason.
    """
    if not scores_by_task:
        raise InvalidInput("combining importance needs at least one task's scores")
    combined: dict[str, Tensor] = {}
    for scores in scores_by_task:
        for name, score in scores.items():
            normalised = score.detach().float() / score.detach().float().mean().clamp_min(1e-30)
            combined[name] = normalised if name not in combined else combined[name] + normalised
    return combined


def pattern_from_scores(scores: dict[str, Tensor], layers: dict[str, WeightLayer], n: int = N_KEEP,
                        m: int = M_GROUP) -> dict[str, Tensor]:
    """The N:M keep-mask of every prunable layer by `scores` (e.g. `combined_importance` of several tasks)."""
    return {name: nm_keep_mask(scores[name], n, m) for name, layer in layers.items()
            if nm_ineligible_reason(layer, m) is None}


def _check_exact(name: str, keep: Tensor, n: int, m: int) -> None:
    """A stored pattern keeps exactly n of every m (a mask with fewer would prune more than the task asked)."""
    counts = group_nonzeros(keep, m)  # (groups,) kept entries per group of m input weights
    if not bool((counts == n).all()):
        raise InvalidInput(f"the shared pattern's mask of {name!r} does not keep exactly {n} of every {m}")


@torch.no_grad()
def apply_pattern_(model: nn.Module, pattern: dict[str, Tensor], layers: dict[str, WeightLayer],
                   n: int = N_KEEP, m: int = M_GROUP) -> PruneReport:
    """Prune `model` in place to a given N:M pattern (name -> bool keep-mask), as `prune_2_4_` would by scores.

    The pattern must cover exactly the layers that can be pruned, with their shapes: a pattern made on
    another base (or another model version) is refused with Conflict rather than applied in part.
    """
    eligible = {name for name, layer in layers.items() if nm_ineligible_reason(layer, m) is None}
    if set(pattern) != eligible:
        raise Conflict("the base's shared 2:4 pattern does not cover this model's prunable layers",
                       detail={"missing": sorted(eligible - set(pattern))[:10],
                               "unknown": sorted(set(pattern) - eligible)[:10]})
    for name, keep in pattern.items():
        weight = layers[name].weight
        if tuple(keep.shape) != tuple(weight.shape):
            raise Conflict(f"the shared 2:4 pattern has shape {tuple(keep.shape)} for {name!r}, the weight "
                           f"{tuple(weight.shape)}")
        _check_exact(name, keep, n, m)
    # A keep-mask with exactly n per group, as a score, selects itself: kept entries score 1, pruned 0.
    return prune_2_4_(model, {name: keep.float() for name, keep in pattern.items()}, layers, n, m)

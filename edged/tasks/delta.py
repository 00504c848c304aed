"""A task's delta, parsed once from the bytes of its `delta.safetensors` (see edged.pipeline.outputs):
sparse replacement values at flat indices, the 2:4 keep-masks of pruned weights (format 2), whole tensors (norm
statistics, full fine-tuning), and the head, which is kept as its own module because tasks differ in their
number of classes.

Formats: 1 (no `delta_format` metadata) stored the pruning zeros as indices and values; 2 stores them as a
bit-packed keep-mask per pruned weight (`name::pattern`). Both are read: format-1 deltas stay on boards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import torch
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from edged.errors import Corrupt
from edged.sparse.shared_pattern import unpack_keep_mask

HEAD_PREFIX = "head."
DELTA_FORMAT = 2  # what edged writes
READABLE_FORMATS = {"1": ("dense", "indices", "values"), "2": ("dense", "indices", "values", "pattern")}


@dataclass
class TaskDelta:
    sparse: dict[str, tuple[Tensor, Tensor]]  # state-dict name -> ((nnz,) int64 flat indices, (nnz,) new values)
    dense: dict[str, Tensor]  # state-dict name -> the whole new tensor (backbone tensors only)
    head: nn.Linear  # (classes, features) weight and (classes,) bias
    # state-dict name -> (ceil(numel / 8),) uint8 bit-packed 2:4 keep-mask: entries whose bit is 0 are zero
    pruned: dict[str, Tensor] = field(default_factory=dict)


def parse_delta(data: bytes, source: str) -> TaskDelta:
    """The delta in `data` (safetensors bytes); Corrupt naming `source` if it is not a task's delta."""
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise Corrupt(f"{source} is not a readable delta: {exc}") from None
    version = _format(data)
    if version not in READABLE_FORMATS:
        raise Corrupt(f"{source} is delta format {version!r}; this edged reads formats "
                      f"{sorted(READABLE_FORMATS)} (a newer edged wrote it)")
    parts = READABLE_FORMATS[version]
    sparse, dense, pruned = {}, {}, {}
    for key, value in tensors.items():
        name, _, part = key.rpartition("::")
        if part not in parts:
            raise Corrupt(f"{source} holds {key!r}, which is not a format-{version} delta entry "
                          f"(name::{'/'.join(parts)})")
        if part == "dense":
            dense[name] = value
        elif part == "values":
            sparse[name] = (tensors[f"{name}::indices"].to(torch.int64), value)
        elif part == "pattern":
            pruned[name] = value
    if set(pruned) & set(dense):
        raise Corrupt(f"{source} holds both a 2:4 pattern and the whole tensor of {sorted(set(pruned) & set(dense))[0]!r}")
    weight, bias = dense.pop(f"{HEAD_PREFIX}weight", None), dense.pop(f"{HEAD_PREFIX}bias", None)
    if weight is None or bias is None or weight.dim() != 2:
        raise Corrupt(f"{source} has no whole classification head (head.weight, head.bias)")
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    head.requires_grad_(False)
    return TaskDelta(sparse, dense, head.eval(), pruned)


def _format(data: bytes) -> str:
    """The `delta_format` in the safetensors header's metadata ("1" when absent: deltas written before it).
    The header is an 8-byte little-endian length and that much JSON; `load` above has already checked it."""
    length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + length]).get("__metadata__") or {}
    return str(metadata.get("delta_format", "1"))


def pruned_indices(bits: Tensor, numel: int, trained: Optional[Tensor], source: str) -> Tensor:
    """(k,) int64 flat indices of the entries a 2:4 keep-mask zeroes in a tensor of `numel` entries: those
    whose bit in `bits` ((ceil(numel / 8),) uint8) is 0, less the `trained` flat indices, which are written
    after the zeros (a trained value wins; leaving it out keeps every index written once)."""
    if bits.dtype != torch.uint8 or bits.shape != ((numel + 7) // 8,):
        raise Corrupt(f"{source}: its 2:4 pattern is {tuple(bits.shape)} {bits.dtype}, a tensor of {numel} "
                      f"entries needs ({(numel + 7) // 8},) uint8")
    keep = unpack_keep_mask(bits, numel)  # (numel,) bool
    if trained is not None:
        if trained.numel() and (int(trained.min()) < 0 or int(trained.max()) >= numel):
            raise Corrupt(f"{source}: trained indices outside its {numel} entries")
        keep[trained] = True
    return (~keep).nonzero().flatten()

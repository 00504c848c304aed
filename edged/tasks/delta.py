"""A task's delta, parsed once from the bytes of its `delta.safetensors` (see edged.pipeline.outputs):
sparse replacement values at flat indices, whole tensors (norm statistics, full fine-tuning), and the head,
which is kept as its own module because tasks differ in their number of classes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from edged.errors import Corrupt

HEAD_PREFIX = "head."


@dataclass
class TaskDelta:
    sparse: dict[str, tuple[Tensor, Tensor]]  # state-dict name -> ((nnz,) int64 flat indices, (nnz,) new values)
    dense: dict[str, Tensor]  # state-dict name -> the whole new tensor (backbone tensors only)
    head: nn.Linear  # (classes, features) weight and (classes,) bias


def parse_delta(data: bytes, source: str) -> TaskDelta:
    """The delta in `data` (safetensors bytes); Corrupt naming `source` if it is not a task's delta."""
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise Corrupt(f"{source} is not a readable delta: {exc}") from None
    sparse, dense = {}, {}
    for key, value in tensors.items():
        name, _, part = key.rpartition("::")
        if part == "dense":
            dense[name] = value
        elif part == "values":
            sparse[name] = (tensors[f"{name}::indices"].to(torch.int64), value)
        elif part != "indices":
            raise Corrupt(f"{source} holds {key!r}, which is not a delta entry (name::dense/indices/values)")
    weight, bias = dense.pop(f"{HEAD_PREFIX}weight", None), dense.pop(f"{HEAD_PREFIX}bias", None)
    if weight is None or bias is None or weight.dim() != 2:
        raise Corrupt(f"{source} has no whole classification head (head.weight, head.bias)")
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    head.requires_grad_(False)
    return TaskDelta(sparse, dense, head.eval())

"""Low-rank deltas confined to a sparse support: masked LoRA (TaskEdge + LoRA) and TASO's sparse LoRA.

The delta of a weight viewed as (out, fan_in) is
- masked:  (B @ A) * M                  B (out, r), A (r, fan_in), M bool (out, fan_in)
- blocked: scatter of B @ A into rows x cols   B (len(rows), r), A (r, len(cols))
B starts at zero, so training starts from the pre-trained model.
"""

from __future__ import annotations

import math
import types
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.sparse.layers import WeightLayer


class LowRankDelta(nn.Module):
    mask: Optional[Tensor]
    rows: Optional[Tensor]
    cols: Optional[Tensor]

    def __init__(
        self,
        weight: Tensor,
        rank: int,
        mask: Optional[Tensor] = None,
        rows: Optional[Tensor] = None,
        cols: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        out, fan_in = weight.shape[0], weight[0].numel()
        n_rows = out if rows is None else rows.numel()
        n_cols = fan_in if cols is None else cols.numel()
        a = torch.empty(rank, n_cols)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.A = nn.Parameter(a.to(weight.device))
        self.B = nn.Parameter(torch.zeros(n_rows, rank, device=weight.device))
        self.register_buffer("mask", None if mask is None else mask.reshape(out, fan_in))
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.weight_shape = tuple(weight.shape)

    def dense(self) -> Tensor:
        """The delta as a dense tensor shaped like the weight."""
        product = self.B @ self.A  # (rows, cols)
        if self.rows is None:
            full = product
        else:
            out, fan_in = self.weight_shape[0], math.prod(self.weight_shape[1:])
            full = product.new_zeros(out, fan_in)
            assert self.cols is not None  # rows and cols are given together
            full[self.rows.unsqueeze(1), self.cols.unsqueeze(0)] = product
        if self.mask is not None:
            full = full * self.mask
        return full.reshape(self.weight_shape)


def _forward(self: WeightLayer, x: Tensor) -> Tensor:
    delta = self.lowrank_delta
    assert isinstance(delta, LowRankDelta)
    weight = self.weight + delta.dense().to(self.weight.dtype)
    if isinstance(self, nn.Linear):
        return F.linear(x, weight, self.bias)
    return self._conv_forward(x, weight, self.bias)  # type: ignore[operator]


def attach_lowrank_(layer: WeightLayer, delta: LowRankDelta) -> None:
    layer.lowrank_delta = delta
    layer.forward = types.MethodType(_forward, layer)  # type: ignore[method-assign]  # per-instance forward


@torch.no_grad()
def merge_lowrank_(model: nn.Module) -> None:
    for layer in model.modules():
        delta = getattr(layer, "lowrank_delta", None)
        if isinstance(delta, LowRankDelta):
            assert isinstance(layer.weight, Tensor)
            layer.weight.add_(delta.dense().to(layer.weight.dtype))
            del layer.lowrank_delta
            del layer.forward


def support_indices(delta: LowRankDelta) -> Tensor:
    """Flat indices of the weight entries the delta can change."""
    out, fan_in = delta.weight_shape[0], math.prod(delta.weight_shape[1:])
    if delta.mask is not None:
        return delta.mask.flatten().nonzero().flatten()
    rows = torch.arange(out, device=delta.B.device) if delta.rows is None else delta.rows
    cols = torch.arange(fan_in, device=delta.B.device) if delta.cols is None else delta.cols
    return (rows.unsqueeze(1) * fan_in + cols.unsqueeze(0)).flatten().sort().values

"""Accumulate ||X_j||_2 for every input feature j of Linear and Conv2d layers, with forward hooks.

A Linear's feature j is input column j, summed over samples and tokens. A Conv2d is a linear layer over
(in_channel, kh, kw) patches; the squared norm of patch entry (c, i, j) over all output positions is the
sum of x_padded[c, i*dil + s*oh, j*dil + s*ow]^2, i.e. a strided slice of the squared padded input, so it
is computed exactly without materialising the patches. Depthwise/grouped convs use the same statistic:
output channel o reads input channels of its group only, which `norm_like_weight` accounts for.
Sums are float64, so splitting the data into different micro-batches changes results only by rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.calibrate.hooks import InputCollector
from edged.sparse.layers import WeightLayer


def _linear_sumsq(x: Tensor) -> Tensor:
    return x.detach().double().square().reshape(-1, x.shape[-1]).sum(0)  # (in,)


def _conv_sumsq(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Sum of squares of every patch entry over all samples and output positions -> (C_in, kh, kw)."""
    sq = x.detach().double().square().sum(0)  # (C, H, W): sum over the batch first
    pad_h, pad_w = _padding(conv, x)
    sq = F.pad(sq, (pad_w[0], pad_w[1], pad_h[0], pad_h[1]))
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    out_h = (sq.shape[1] - dh * (kh - 1) - 1) // sh + 1
    out_w = (sq.shape[2] - dw * (kw - 1) - 1) // sw + 1
    stat = sq.new_zeros(sq.shape[0], kh, kw)
    for i in range(kh):
        for j in range(kw):
            window = sq[:, i * dh : i * dh + sh * (out_h - 1) + 1 : sh, j * dw : j * dw + sw * (out_w - 1) + 1 : sw]
            stat[:, i, j] = window.sum((1, 2))
    return stat


def _padding(conv: nn.Conv2d, x: Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        pads = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]
    padding = conv.padding  # (h, w) ints: the string paddings are handled above
    assert not isinstance(padding, str)
    return (padding[0], padding[0]), (padding[1], padding[1])


class FeatureNormCollector(InputCollector):
    """Context manager: while active, every forward of the given layers adds to the squared-norm sums."""

    def __init__(self, layers: dict[str, WeightLayer]) -> None:
        super().__init__(layers)
        self.sumsq: dict[str, Tensor] = {}

    def add(self, name: str, layer: nn.Module, x: Tensor) -> None:
        stat = _linear_sumsq(x) if isinstance(layer, nn.Linear) else _conv_sumsq(layer, x)  # type: ignore[arg-type]
        stat = stat.cpu()
        self.sumsq[name] = self.sumsq[name] + stat if name in self.sumsq else stat

    def norms(self) -> dict[str, Tensor]:
        """||X_j||_2 per layer: Linear (in,), Conv2d (C_in, kh, kw), float64."""
        return {name: s.sqrt() for name, s in self.sumsq.items()}


def norm_like_weight(layer: WeightLayer, norm: Tensor) -> Tensor:
    """Broadcast a layer's feature norms to its weight's shape, float32.

    Linear: (in,) -> (out, in). Conv2d: (C_in, kh, kw) -> (out, C_in / groups, kh, kw), where output
    channel o of group g reads input channels g * C_in/groups ... (g+1) * C_in/groups - 1.
    """
    weight = layer.weight
    if isinstance(layer, nn.Linear):
        return norm.to(torch.float32).expand_as(weight).to(weight.device)
    groups = layer.groups
    out = weight.shape[0]
    per_group = norm.reshape(groups, -1, *norm.shape[1:])  # (groups, C_in/groups, kh, kw)
    expanded = per_group.repeat_interleave(out // groups, dim=0)  # (out, C_in/groups, kh, kw)
    return expanded.to(torch.float32).to(weight.device)

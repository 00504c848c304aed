"""Sparse-delta training: W = W0 + scatter(indices, values), gradients only for the masked entries.

`attach_deltas_(model, masks)` gives each masked Linear/Conv2d a `sparse_delta` submodule holding
`values` (nnz,) as the only trainable tensor of that layer, and routes the layer's forward through a
custom autograd function. The frozen weight W0 is never written and never gets a gradient, no dense
weight gradient is kept, and the optimizer sees `nnz` numbers per layer.

Activation memory: for a Linear (and a 1x1 stride-1 Conv2d, which is a Linear over channels) the
backward needs only the input columns that some trainable entry reads, so only x[..., used_cols] is
saved instead of the whole input. kxk and grouped convs keep the whole input and gather the masked
entries from a transient dense weight gradient (these layers are small in the models we adapt).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.sparse.entry_write import write_entries
from edged.sparse.sddmm import token_major_columns, value_grad


@dataclass
class _ResidentCopy:
    """W0 + delta in one compute dtype, kept between calls (`SparseDelta.resident_merged`)."""

    weight_version: int  # the frozen weight's autograd version when `merged` was cast from it
    merged: Tensor  # (out, fan_in) W0 + delta
    index: Tensor  # (nnz,) flat position of each entry in `merged`
    base: Tensor  # (nnz,) W0's entries in the compute dtype
    values_written: tuple[int, int] = (-1, 0)  # (values' version, data pointer) last written into `merged`


class SparseDelta(nn.Module):
    """Trainable entries of one weight. rows/cols index the weight viewed as (out, in * kh * kw)."""

    rows: Tensor
    cols: Tensor
    used_cols: Tensor
    col_slot: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        flat = mask.reshape(mask.shape[0], -1)  # (out, fan_in)
        rows, cols = flat.nonzero(as_tuple=True)  # row-major order: deterministic, sorted as the SDDMM wants
        used_cols, col_slot = torch.unique(cols, return_inverse=True)
        self.register_buffer("rows", rows)  # (nnz,)
        self.register_buffer("cols", cols)  # (nnz,)
        self.register_buffer("used_cols", used_cols)  # (U,) input features some entry reads
        self.register_buffer("col_slot", col_slot)  # (nnz,) position of each entry's column in used_cols
        self.values = nn.Parameter(torch.zeros(rows.numel(), dtype=torch.float32))
        self.weight_shape = tuple(mask.shape)
        # dtype -> (bias version, the frozen bias in that dtype): made once per compute dtype on CUDA, not a buffer
        self._bias_copies: dict[torch.dtype, tuple[int, Tensor]] = {}
        self._resident: dict[torch.dtype, _ResidentCopy] = {}  # compute dtype -> resident_merged's copy

    def merged(self, weight: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """W0 + delta as a new dense tensor shaped like the weight, in `dtype` (default: the weight's).

        The cast copy is made first and the nnz values are added into it: one pass over the weight.
        """
        flat = weight.reshape(weight.shape[0], -1).to(dtype or weight.dtype, copy=True)
        # (rows, cols) pairs are unique, so gather-add-scatter is exact and avoids accumulate's index sort.
        flat[self.rows, self.cols] = flat[self.rows, self.cols] + self.values.to(flat.dtype)
        return flat.reshape(weight.shape)

    def resident_merged(self, weight: Tensor, dtype: torch.dtype, reuse: bool = False) -> Tensor:
        """W0 + delta in `dtype`, the same numbers as `merged`, held in one persistent copy: the frozen part is
        cast once (again only if the weight is written), and each call rewrites only the nnz entries, so a call
        costs O(nnz) instead of a pass over the weight.

        reuse: skip even that write when these values (same autograd version and storage) were the last written,
        as in a backward after its forward. A forward always writes: a CUDA graph replays only what its capture
        launched, so the write must be in the captured forward."""
        copy = self._resident.get(dtype)
        if copy is None or copy.weight_version != weight._version or copy.merged.device != weight.device:
            merged = weight.detach().reshape(weight.shape[0], -1).to(dtype, copy=True)  # (out, fan_in)
            copy = _ResidentCopy(weight._version, merged, self.rows * merged.shape[1] + self.cols,
                                 merged[self.rows, self.cols].clone())
            self._resident[dtype] = copy
        values = self.values.detach()
        current = (values._version, values.data_ptr())
        if not (reuse and copy.values_written == current):
            write_entries(copy.merged.view(-1), copy.index, copy.base, values)
            copy.values_written = current
        return copy.merged.view(weight.shape)

    def frozen_bias(self, bias: Tensor, dtype: torch.dtype) -> Tensor:
        """The layer's frozen bias in `dtype`: itself, or a copy made once and kept until the bias is written
        again (autograd's version counter says when), so a call casts nothing."""
        if bias.dtype == dtype:
            return bias
        version, copy = self._bias_copies.get(dtype, (-1, bias))
        if version != bias._version or copy.device != bias.device:
            copy = bias.detach().to(dtype)
            self._bias_copies[dtype] = (bias._version, copy)
        return copy


def _compute_dtype(x: Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


class _SparseDeltaLinear(torch.autograd.Function):
    """y = x (W0 + delta)^T + b. CPU: through a merged weight made per call. CUDA: through the resident merged copy
    (`SparseDelta.resident_merged`), so a call does no weight-sized work beyond the matmuls, and nothing that syncs
    the host (a whole step can be captured in a CUDA graph).

    Measured against x W0^T plus a sparse correction (values[e] * x[:, cols[e]] added into y[:, rows[e]], O(T * nnz)
    a call) on the H200, ViT-B/16 batch 64 bf16, one CUDA graph per step: 29.3 ms vs 62.0 ms, so that path is gone."""

    @staticmethod
    def forward(ctx, x, weight, bias, values, delta):  # type: ignore[override]
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            xc = _cast(x, dtype)
            x2d = xc.reshape(-1, x.shape[-1])  # (T, in)
            if x.is_cuda:
                b = None if bias is None else delta.frozen_bias(bias, dtype)
                y = F.linear(xc, delta.resident_merged(weight, dtype), b)
            else:
                b = None if bias is None else _cast(bias, dtype)
                y = F.linear(xc, delta.merged(weight, dtype), b)
            x_saved = _used_columns(x2d, delta.used_cols)
        ctx.delta, ctx.x_shape, ctx.x_dtype = delta, x.shape, x.dtype
        ctx.save_for_backward(x_saved, weight)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x_saved, weight = ctx.saved_tensors
        delta = ctx.delta
        g = grad_y.reshape(-1, grad_y.shape[-1])  # (T, out)
        grad_x = None
        if ctx.needs_input_grad[0]:
            if g.is_cuda:
                grad_x = g @ delta.resident_merged(weight, g.dtype, reuse=True)  # the forward wrote these values
            else:
                grad_x = g @ delta.merged(weight, g.dtype)
            grad_x = _cast(grad_x.reshape(ctx.x_shape), ctx.x_dtype)
        grad_values = value_grad(g, x_saved, delta.rows, delta.col_slot)
        return grad_x, None, None, grad_values, None


def _used_columns(x2d: Tensor, used_cols: Tensor) -> Tensor:
    """x (T, in) -> its used columns (T, U), the only part of the input the value gradient reads.

    On CUDA the copy is token-contiguous, strides (1, T): the SDDMM then reads each entry's tokens as one
    contiguous run. Read row-major, the 64 entries of a tile gather 2-byte values from 64 random columns of
    every token row, a 32-byte sector per value: the kernel took 9.2 of a 29.2 ms ViT-B/16 step on the H200.
    On the CPU row-major: its blocked matmul wants that layout."""
    if x2d.is_cuda:
        return token_major_columns(x2d, used_cols)  # (T, U), strides (1, T)
    return x2d if used_cols.numel() == x2d.shape[1] else x2d[:, used_cols]


class _SparseDeltaConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, values, delta, conv):  # type: ignore[override]
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            w = delta.merged(weight, dtype)
            xc = _cast(x, dtype)
            b = None if bias is None else _cast(bias, dtype)
            y = F.conv2d(xc, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
            pointwise = _is_pointwise(conv)
            saved = xc[:, delta.used_cols] if pointwise else xc  # (N, U, H, W) or (N, C, H, W)
        ctx.delta, ctx.conv, ctx.pointwise, ctx.x_shape, ctx.x_dtype = delta, conv, pointwise, x.shape, x.dtype
        ctx.save_for_backward(saved, weight, values)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        saved, weight, _ = ctx.saved_tensors
        delta, conv = ctx.delta, ctx.conv
        w = delta.merged(weight, grad_y.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _cast(torch.nn.grad.conv2d_input(
                ctx.x_shape, w, grad_y, conv.stride, conv.padding, conv.dilation, conv.groups
            ), ctx.x_dtype)
        if ctx.pointwise:
            g = grad_y.permute(0, 2, 3, 1).reshape(-1, grad_y.shape[1])  # (N*H*W, out)
            x_used = saved.permute(0, 2, 3, 1).reshape(-1, saved.shape[1])  # (N*H*W, U)
            grad_values = value_grad(g, x_used, delta.rows, delta.col_slot)
        else:
            dense = torch.nn.grad.conv2d_weight(saved, w.shape, grad_y, conv.stride, conv.padding, conv.dilation, conv.groups)
            grad_values = dense.reshape(dense.shape[0], -1)[delta.rows, delta.cols].float()
        return grad_x, None, None, grad_values, None, None


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 and conv.padding in ((0, 0), "valid")


def _linear_forward(self: nn.Linear, x: Tensor) -> Tensor:
    return _SparseDeltaLinear.apply(x, self.weight, self.bias, self.sparse_delta.values, self.sparse_delta)


def _conv_forward(self: nn.Conv2d, x: Tensor) -> Tensor:
    if self.padding_mode != "zeros":
        raise NotImplementedError("sparse delta on a Conv2d needs padding_mode='zeros'")
    return _SparseDeltaConv.apply(x, self.weight, self.bias, self.sparse_delta.values, self.sparse_delta, self)


def attach_deltas_(model: nn.Module, masks: dict[str, Tensor]) -> dict[str, SparseDelta]:
    """Give every layer named in `masks` (weight parameter names) a trainable sparse delta, in place.

    Freezes every parameter of the model; the returned deltas' `values` are the only new trainable tensors.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    deltas = {}
    for weight_name, mask in masks.items():
        layer = model.get_submodule(weight_name.rpartition(".")[0])
        assert isinstance(layer.weight, Tensor)
        if mask.shape != layer.weight.shape:
            raise ValueError(f"mask for {weight_name} is {tuple(mask.shape)}, weight is {tuple(layer.weight.shape)}")
        if not bool(mask.any()):
            continue
        layer.sparse_delta = SparseDelta(mask).to(layer.weight.device)
        forward = _linear_forward if isinstance(layer, nn.Linear) else _conv_forward
        layer.forward = types.MethodType(forward, layer)
        deltas[weight_name] = layer.sparse_delta
    return deltas


@torch.no_grad()
def merge_deltas_(model: nn.Module) -> int:
    """Fold every sparse delta into its weight and restore the plain layer. Returns the layers merged."""
    merged = 0
    for layer in model.modules():
        delta = getattr(layer, "sparse_delta", None)
        if isinstance(delta, SparseDelta):
            assert isinstance(layer.weight, Tensor)
            layer.weight.copy_(delta.merged(layer.weight))
            del layer.sparse_delta
            del layer.forward  # back to the class's forward
            merged += 1
    return merged

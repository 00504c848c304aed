"""The elementwise halves of an INT8 Linear, one kernel each on CUDA with Triton.

Written with torch ops, quantizing x is five kernels (cast to float32, divide, round, clamp, cast to int8) and
dequantizing the int32 product four (cast, scale, bias, cast to fp16), each a pass over a (T, features) tensor
with float32 temporaries. On the H100, ViT-B/16 with every block Linear INT8 that way ran at 0.25-0.35x fp16
dense end to end (batches 1-8): the GEMMs were not the cost. Here each half is one pass. Elsewhere (CPU, or no
Triton) the torch ops compute the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from edged.lazy_triton import lazy_triton

QMAX = 127.0
_BLOCK = 1024


def quantize(x: Tensor, scale: Tensor | float) -> Tensor:
    """round(x / scale) (half to even) clamped to [-127, 127], int8; scale broadcasts against x."""
    return torch.clamp(torch.round(x.float() / scale), -QMAX, QMAX).to(torch.int8)


def quantize_rows(x2d: Tensor, scale: float, rows: int) -> Tensor:
    """x (T, in) -> int8 (rows, in), rows >= T: quantize(x, scale) with zero rows after T (the padding the
    int8 GEMMs need)."""
    kernels = _kernels() if x2d.is_cuda else None
    if kernels is None:
        q = quantize(x2d, scale)
        return torch.nn.functional.pad(q, (0, 0, 0, rows - x2d.shape[0])) if rows > x2d.shape[0] else q
    x2d = x2d.contiguous()
    q = torch.empty(rows, x2d.shape[1], dtype=torch.int8, device=x2d.device)
    total = q.numel()
    kernels[0][(triton_blocks(total),)](x2d, q, x2d.numel(), total, scale, BLOCK=_BLOCK)
    return q


def dequantize_rows(acc: Tensor, out_scale: Tensor, bias: Tensor | None, rows: int) -> Tensor:
    """int32 acc (T', out) -> fp16 (rows, out), rows <= T': acc[:rows] * out_scale (+ bias), per column."""
    kernels = _kernels() if acc.is_cuda else None
    if kernels is None:
        y = acc[:rows].float() * out_scale
        return (y + bias if bias is not None else y).half()
    out = acc.shape[1]
    y = torch.empty(rows, out, dtype=torch.float16, device=acc.device)
    total = y.numel()
    kernels[1][(triton_blocks(total),)](acc, out_scale, bias if bias is not None else out_scale, y, total, out,
                                        HAS_BIAS=bias is not None, BLOCK=_BLOCK)
    return y


def triton_blocks(n: int) -> int:
    return -(-n // _BLOCK)


@lazy_triton
def _kernels(triton: Any, tl: Any) -> Any:
    """(quantize kernel, dequantize kernel), or None where Triton is not installed (imported lazily)."""

    @triton.jit
    def quantize_kernel(x_ptr, q_ptr, n_valid, n_total, scale, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat index into q (rows, in), row-major
        x = tl.load(x_ptr + offs, mask=offs < n_valid, other=0.0).to(tl.float32)
        v = tl.minimum(tl.maximum(x / scale, -127.0), 127.0)  # clamping first changes nothing: +-127 are integers
        r = tl.floor(v + 0.5)
        r = tl.where((r - v == 0.5) & (r * 0.5 != tl.floor(r * 0.5)), r - 1.0, r)  # ties to even, as torch.round
        tl.store(q_ptr + offs, r.to(tl.int8), mask=offs < n_total)

    @triton.jit
    def dequantize_kernel(acc_ptr, scale_ptr, bias_ptr, y_ptr, n, out, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat index into y (rows, out); acc has >= rows
        ok = offs < n
        col = offs % out
        y = tl.load(acc_ptr + offs, mask=ok, other=0).to(tl.float32) * tl.load(scale_ptr + col, mask=ok, other=0.0)
        if HAS_BIAS:
            y += tl.load(bias_ptr + col, mask=ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + offs, y.to(tl.float16), mask=ok)

    return quantize_kernel, dequantize_kernel

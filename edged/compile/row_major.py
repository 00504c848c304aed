"""A token-major copy of a 2:4 Linear's output that cuSPARSELt wrote feature-major.

Why: on sm_90 cuSPARSELt's kernels are about twice as fast writing D = W X^T as (out, T) row-major as writing it
(T, out) row-major (H100, fp16, one layer from a CUDA graph: 4096 -> 14336 at 8,192 tokens 0.893 ms against 2.103;
dense 1.320). The model around the layer wants (T, out) row-major (SDPA refuses a strided last dimension, and an
add into the residual reads it row by row). torch's `.contiguous()` of the transposed view ran at 0.3-0.6 TB/s on
the H200; this copy goes through (TILE x TILE) tiles in shared memory, so both its reads and its writes are
contiguous.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from edged.lazy_triton import lazy_triton

_TILE = 64


def row_major(y: Tensor) -> Tensor:
    """y (..., out), any strides -> the same values row-major. A feature-major layout (the 2-D view's strides
    (1, ld) with ld >= T: cuSPARSELt's (out, T) result, or torch's (out, T') one narrowed from padded T' tokens)
    is copied through tiles on CUDA with Triton; other layouts by torch."""
    if y.is_contiguous():
        return y
    y2d = y.reshape(-1, y.shape[-1])  # (T, out): a view whenever y is a feature-major result
    tokens, features = y2d.shape
    kernel = _kernel() if y.is_cuda else None
    if kernel is None or y2d.stride(0) != 1 or y2d.stride(1) < tokens:
        return y2d.contiguous().view(y.shape)  # y2d is already a row-major copy where reshape had to copy
    out = y.new_empty(tokens, features)  # (T, out)
    grid = (-(-tokens // _TILE), -(-features // _TILE))
    kernel[grid](y2d, out, tokens, features, y2d.stride(1), TILE=_TILE)
    return out.view(y.shape)


@lazy_triton
def _kernel(triton: Any, tl: Any) -> Any:
    """The Triton kernel, or None where Triton is not installed."""

    @triton.jit
    def transpose_copy_kernel(src_ptr, out_ptr, tokens, features, src_lead, TILE: tl.constexpr):
        # 64-bit offsets: an (out, T) result of 2^31 elements or more is 4 GiB in fp16, large but possible
        t = (tl.program_id(0) * TILE + tl.arange(0, TILE)).to(tl.int64)  # (TILE,)
        f = (tl.program_id(1) * TILE + tl.arange(0, TILE)).to(tl.int64)  # (TILE,)
        ok = (t < tokens)[:, None] & (f < features)[None, :]
        v = tl.load(src_ptr + f[None, :] * src_lead + t[:, None], mask=ok)  # src (out, >= T) row-major: along t
        tl.store(out_ptr + t[:, None] * features + f[None, :], v, mask=ok)  # out (T, out) row-major: along f

    return transpose_copy_kernel

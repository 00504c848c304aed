"""Value gradient of a sparse delta as a sampled dense-dense product (SDDMM).

`value_grad(grad_out, x, rows, cols)[e] = sum_t grad_out[t, rows[e]] * x[t, cols[e]]`, float32 (nnz,): the
weight gradient `grad_out^T @ x` evaluated only at the nnz masked entries.

On CUDA with Triton a kernel computes exactly those nnz dot products over the tokens (nnz * T multiply-adds instead
of out * U * T). Each program takes BLOCK_E consecutive entries (sorted by (row, col), so the grad_out loads are
nearly contiguous) and one chunk of the tokens; x is best token-contiguous (strides (1, T), as the sparse delta
saves it on CUDA, `token_major_columns`), so each entry's tokens are one contiguous run. The token chunks write
partial sums to a (splits, nnz) buffer that one sum reduces afterwards: no atomics, so the result is deterministic,
and enough programs run to fill the GPU. Elsewhere (CPU, a Jetson without Triton) a blocked dense matmul over the
used columns followed by a gather computes the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from edged.lazy_triton import lazy_triton

# Largest (rows x columns) gradient block the torch path computes at once.
CHUNK_ELEMENTS = 1 << 24
# SDDMM tile: 32 entries x 64 tokens, measured best of six tiles on ViT-B/16 batch-64 shapes (H100)
_BLOCK_E, _BLOCK_T = 32, 64
_GATHER_T, _GATHER_U = 64, 64
_PROGRAMS_WANTED = 1024  # a few waves over the H200's 132 SMs


def value_grad(grad_out: Tensor, x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """grad_out (T, out), x (T, in) or (T, U) in any strides, rows/cols (nnz,) indices into their columns
    -> float32 (nnz,)."""
    if grad_out.is_cuda and rows.numel() and grad_out.shape[0] and _kernels() is not None:
        return _value_grad_triton(grad_out, x, rows, cols)
    return value_grad_torch(grad_out, x, rows, cols)


def value_grad_torch(grad_out: Tensor, x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """The torch path: one tensor-core matmul per block of output rows gives the (rows, columns) block of the
    weight gradient, the entries are gathered from it and the block is freed at once (no dense weight
    gradient is kept). Blocks hold at most CHUNK_ELEMENTS."""
    out, used = grad_out.shape[1], x.shape[1]
    x = x if x.dtype == grad_out.dtype else x.to(grad_out.dtype)
    step = max(1, CHUNK_ELEMENTS // max(used, 1))
    if step >= out:
        return grad_out.t().mm(x)[rows, cols].float()  # (out, U) block, gathered
    values = torch.empty(rows.numel(), dtype=torch.float32, device=grad_out.device)
    for first in range(0, out, step):
        chosen = ((rows >= first) & (rows < first + step)).nonzero().flatten()
        if chosen.numel():
            block = grad_out[:, first : first + step].t().mm(x)  # (step, U)
            values[chosen] = block[rows[chosen] - first, cols[chosen]].float()
    return values


def token_major_columns(x2d: Tensor, cols: Tensor) -> Tensor:
    """x (T, in) -> x[:, cols] (T, U) stored token-contiguous, strides (1, T): the layout the SDDMM reads fastest.

    On CUDA with Triton one kernel gathers and transposes through tiles (reads along the sorted columns, writes
    along the tokens). torch's index_select of the transposed view reads one 2-byte value per 32-byte sector:
    on the H100 it cost 2.8 ms of a 25.6 ms ViT-B/16 step, more than the SDDMM it fed."""
    kernels = _kernels() if x2d.is_cuda else None
    if kernels is None:
        return x2d.t().index_select(0, cols).t()
    x2d = x2d if x2d.stride(1) == 1 else x2d.contiguous()
    tokens, used = x2d.shape[0], cols.numel()
    out = torch.empty(used, tokens, dtype=x2d.dtype, device=x2d.device)  # (U, T)
    grid = (-(-tokens // _GATHER_T), -(-used // _GATHER_U))
    kernels[1][grid](x2d, cols, out, tokens, used, x2d.stride(0), BLOCK_T=_GATHER_T, BLOCK_U=_GATHER_U)
    return out.t()


def _value_grad_triton(grad_out: Tensor, x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    kernel = _kernels()[0]
    tokens, nnz = grad_out.shape[0], rows.numel()
    entry_blocks = -(-nnz // _BLOCK_E)
    token_tiles = -(-tokens // _BLOCK_T)
    splits = max(1, min(token_tiles, _PROGRAMS_WANTED // entry_blocks))
    tiles_per_split = -(-token_tiles // splits)
    splits = -(-token_tiles // tiles_per_split)  # no empty split
    partial = torch.empty(splits, nnz, dtype=torch.float32, device=grad_out.device)  # (splits, nnz)
    kernel[(entry_blocks, splits)](
        grad_out, x, rows, cols, partial, tokens, nnz, tiles_per_split * _BLOCK_T,
        grad_out.stride(0), grad_out.stride(1), x.stride(0), x.stride(1),
        BLOCK_E=_BLOCK_E, BLOCK_T=_BLOCK_T,
    )
    return partial[0] if splits == 1 else partial.sum(0)


@lazy_triton
def _kernels(triton: Any, tl: Any) -> Any:
    """(SDDMM kernel, gather-transpose kernel), or None where Triton is not installed (imported lazily:
    CPU-only installs lack it)."""

    @triton.jit
    def sddmm_kernel(g_ptr, x_ptr, rows_ptr, cols_ptr, partial_ptr, tokens, nnz, chunk,
                     g_stride_t, g_stride_c, x_stride_t, x_stride_c,
                     BLOCK_E: tl.constexpr, BLOCK_T: tl.constexpr):
        block, split = tl.program_id(0), tl.program_id(1)
        entries = block * BLOCK_E + tl.arange(0, BLOCK_E)  # (BLOCK_E,)
        entry_ok = entries < nnz
        rows = tl.load(rows_ptr + entries, mask=entry_ok, other=0)
        cols = tl.load(cols_ptr + entries, mask=entry_ok, other=0)
        acc = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
        first = split * chunk
        for offset in tl.range(0, chunk, BLOCK_T):
            t = first + offset + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
            ok = (t < tokens)[:, None] & entry_ok[None, :]
            g = tl.load(g_ptr + t[:, None] * g_stride_t + rows[None, :] * g_stride_c, mask=ok, other=0.0)
            xv = tl.load(x_ptr + t[:, None] * x_stride_t + cols[None, :] * x_stride_c, mask=ok, other=0.0)
            acc += g.to(tl.float32) * xv.to(tl.float32)
        tl.store(partial_ptr + split * nnz + entries, tl.sum(acc, axis=0), mask=entry_ok)

    @triton.jit
    def gather_transpose_kernel(x_ptr, cols_ptr, out_ptr, tokens, used, x_stride_t,
                                BLOCK_T: tl.constexpr, BLOCK_U: tl.constexpr):
        t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
        u = tl.program_id(1) * BLOCK_U + tl.arange(0, BLOCK_U)  # (BLOCK_U,)
        u_ok = u < used
        cols = tl.load(cols_ptr + u, mask=u_ok, other=0)
        ok = (t < tokens)[:, None] & u_ok[None, :]
        v = tl.load(x_ptr + t[:, None] * x_stride_t + cols[None, :], mask=ok)  # (BLOCK_T, BLOCK_U)
        tl.store(out_ptr + u[None, :] * tokens + t[:, None], v, mask=ok)  # out (U, T): contiguous along t

    return sddmm_kernel, gather_transpose_kernel

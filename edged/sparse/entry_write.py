"""Write the nnz trained entries into a resident merged weight: merged.flat[index[e]] = base[e] + values[e].

The numbers are torch's `base + values.to(dtype)` in the merged weight's dtype (values rounded to it first, the sum
rounded once more), so the resident weight stays bit-identical to `SparseDelta.merged`. On CUDA with Triton this is
one kernel; torch needs three (the cast, the add, the index write). A ViT-B/16 step makes this write for each of its
48 sparse Linears, and under a CUDA graph each launch costs a few microseconds whatever its size.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from edged.lazy_triton import lazy_triton

_BLOCK = 1024


def write_entries(merged_flat: Tensor, index: Tensor, base: Tensor, values: Tensor) -> None:
    """merged_flat (N,) in the compute dtype, index (nnz,) int64 into it, base (nnz,) in the compute dtype (W0's
    entries), values (nnz,) float32: merged_flat[index] = base + values.to(merged_flat.dtype), in place."""
    kernel = _kernel() if merged_flat.is_cuda and index.numel() else None
    if kernel is None:
        merged_flat[index] = base + values.to(merged_flat.dtype)
        return
    kernel[(-(-index.numel() // _BLOCK),)](merged_flat, index, base, values, index.numel(), BLOCK=_BLOCK)


@lazy_triton
def _kernel(triton: Any, tl: Any) -> Any:
    """The Triton kernel, or None where Triton is not installed (CPU-only installs lack it)."""

    @triton.jit
    def write_entries_kernel(merged_ptr, index_ptr, base_ptr, values_ptr, nnz, BLOCK: tl.constexpr):
        e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,)
        ok = e < nnz
        index = tl.load(index_ptr + e, mask=ok, other=0)
        base = tl.load(base_ptr + e, mask=ok, other=0.0)
        dtype = merged_ptr.dtype.element_ty
        value = tl.load(values_ptr + e, mask=ok, other=0.0).to(dtype)  # rounded to the compute dtype, as torch's cast
        tl.store(merged_ptr + index, (base.to(tl.float32) + value.to(tl.float32)).to(dtype), mask=ok)

    return write_entries_kernel

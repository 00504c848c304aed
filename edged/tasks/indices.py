"""The sorted flat indices of a placed delta, stored in whichever of two forms is smaller.

- `FlatIndices`: one entry at a time, as int16 gaps between neighbours where every gap fits (2 bytes an entry),
  else the indices themselves (int32, int64 past 2**31 elements).
- `BlockIndices`: one block at a time (a block is a 1 x 16 segment of a weight's row, `edged.sparse.blocks`):
  the block's first flat index (int16 gaps between blocks where they fit, else int32) and a 16-bit occupancy
  bitmap of which of its 16 entries are listed: 4 (or 6) bytes a block, whatever the entries in it.

Block-wise pays when blocks are full: a 2:4 pattern's zeroed entries fill 8 of every 16 (0.5 bytes an entry
against 2). A 0.1 % sparse delta holds about one entry per block (a per-neuron top-K of 1 per row), where it
costs twice the gaps, so `encode_indices` keeps whichever is smaller for each list (`INDEX_FORMATS`).
Both decode to the same (nnz,) int64 indices, so a switch writes the same entries either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from edged.sparse.blocks import BLOCK

INDEX_FORMATS = ("smaller", "flat", "blocks")  # what `encode_indices` may store; "smaller" is the default
_INT16_MAX = torch.iinfo(torch.int16).max


@dataclass(eq=False)  # identity, not value: placed deltas of tasks that share a 2:4 pattern share one object
class FlatIndices:
    """(nnz,) sorted flat indices into one buffer: int16 gaps from `first` (gaps[0] = 0) when every gap fits,
    else the indices themselves (int32, or int64 past 2**31 elements)."""

    first: int
    stored: Tensor

    @staticmethod
    def encode(indices: Tensor, buffer_numel: int) -> "FlatIndices":
        """`indices`: (nnz,) int64, sorted."""
        first, stored = _gaps(indices, buffer_numel)
        return FlatIndices(first, stored)

    def decode(self) -> Tensor:
        """(nnz,) int64 flat indices, on the device the gaps are on (one scan kernel and one add): int64 because
        `index_copy_` takes no other, and it writes 101k entries of ViT-B/16 in half the time of `index_put_`."""
        return _ungap(self.first, self.stored)

    @property
    def nbytes(self) -> int:
        return self.stored.numel() * self.stored.element_size()

    def to(self, device: torch.device) -> "FlatIndices":
        """Itself when already there (a shared zeroed-index list stays shared)."""
        stored = self.stored.to(device)
        return self if stored is self.stored else FlatIndices(self.first, stored)

    def pinned(self) -> "FlatIndices":
        return FlatIndices(self.first, self.stored.pin_memory())


@dataclass(eq=False)
class BlockIndices:
    """(nnz,) sorted flat indices as blocks: (B,) block starts, gap-coded like `FlatIndices`, and (B,) 16-bit
    occupancy bitmaps (bit k: the block's entry k is listed), held as int16."""

    first: int
    starts: Tensor  # (B,) int16 gaps or int32 / int64 starts
    bitmaps: Tensor  # (B,) int16, read as uint16

    @staticmethod
    def encode(indices: Tensor, block_starts: Tensor, buffer_numel: int) -> "BlockIndices":
        """`indices`: (nnz,) int64, sorted; `block_starts`: (nnz,) int64, the first flat index of each one's block."""
        starts, counts = torch.unique_consecutive(block_starts, return_counts=True)  # (B,), (B,)
        block = torch.repeat_interleave(torch.arange(starts.numel()), counts)  # (nnz,) block of each entry
        bits = torch.zeros(starts.numel(), dtype=torch.int32).index_add_(
            0, block, torch.ones_like(indices, dtype=torch.int32) << (indices - block_starts).to(torch.int32))
        first, stored = _gaps(starts, buffer_numel)
        return BlockIndices(first, stored, (bits - (bits > _INT16_MAX).to(torch.int32) * 65536).to(torch.int16))

    def decode(self) -> Tensor:
        """(nnz,) int64 flat indices, sorted: each block's listed entries, block after block."""
        starts = _ungap(self.first, self.starts)  # (B,)
        offsets = torch.arange(BLOCK, device=starts.device)  # (16,)
        listed = (self.bitmaps.to(torch.int32)[:, None] >> offsets.to(torch.int32)) & 1  # (B, 16)
        return (starts[:, None] + offsets)[listed.bool()]

    @property
    def blocks(self) -> int:
        return self.starts.numel()

    @property
    def nbytes(self) -> int:
        return self.starts.numel() * self.starts.element_size() + self.bitmaps.numel() * 2

    def to(self, device: torch.device) -> "BlockIndices":
        """Itself when already there (a shared zeroed-index list stays shared)."""
        starts = self.starts.to(device)
        return self if starts is self.starts else BlockIndices(self.first, starts, self.bitmaps.to(device))

    def pinned(self) -> "BlockIndices":
        return BlockIndices(self.first, self.starts.pin_memory(), self.bitmaps.pin_memory())


Indices = Union[FlatIndices, BlockIndices]


def encode_indices(indices: Tensor, block_starts: Tensor, buffer_numel: int, index_format: str = "smaller") -> Indices:
    """`indices` (nnz,) int64 sorted, each in the block starting at `block_starts` (nnz,), stored as `index_format`
    says: "flat", "blocks", or the "smaller" of the two (the flat form on a tie)."""
    if index_format not in INDEX_FORMATS:
        raise ValueError(f"unknown index format {index_format!r}; accepted: {', '.join(INDEX_FORMATS)}")
    flat = FlatIndices.encode(indices, buffer_numel)
    if index_format == "flat":
        return flat
    blocks = BlockIndices.encode(indices, block_starts, buffer_numel)
    return blocks if index_format == "blocks" or blocks.nbytes < flat.nbytes else flat


def block_starts(local: Tensor, shape: torch.Size) -> Tensor:
    """(nnz,) int64 first index of the 1 x 16 row block holding each of `local` (flat indices into a tensor of
    `shape`, seen as (shape[0], rest); a 1-D tensor is one row)."""
    row = int(torch.Size(shape[1:]).numel()) if len(shape) > 1 else max(1, shape.numel())
    within = local % row
    return local - within + within // BLOCK * BLOCK


def _gaps(indices: Tensor, buffer_numel: int) -> tuple[int, Tensor]:
    """(first, int16 gaps from it) when every gap of the sorted `indices` fits, else (0, the indices narrowed)."""
    if indices.numel():
        gaps = torch.diff(indices, prepend=indices[:1])
        if int(gaps.max()) <= _INT16_MAX:
            return int(indices[0]), gaps.to(torch.int16)
    return 0, indices.to(torch.int32) if buffer_numel < 2**31 else indices


def _ungap(first: int, stored: Tensor) -> Tensor:
    if stored.dtype != torch.int16:
        return stored.to(torch.int64)
    return torch.cumsum(stored, 0, dtype=torch.int64).add_(first)

"""The resident base's backbone in one flat buffer per dtype, and task deltas placed into it.

Every floating parameter and buffer of the backbone becomes a view into its dtype's flat buffer, so a task's
delta, however many layers it touches, is one (nnz,) list of flat indices and one (nnz,) list of values per
buffer (one buffer for an fp32 or fp16 model). A switch is then three indexing kernels per buffer (restore,
save, write) instead of a Python loop over layers: on the GPU the launch overhead of ~50 layers x 3 ops was
the whole cost of a switch.

A 2:4 delta's keep-masks are expanded here into the flat indices they zero, kept apart from the written entries
(never overlapping them) and without values: a switch fills them with zeros (2 bytes an entry held, not 6) and
restores the base's values there like anywhere else.

A placed delta's indices are sorted and stored in the smaller of two forms (`edged.tasks.indices`): int16 gaps
between neighbours (at 0.1 % density a gap is about a thousand elements; 2 bytes an entry instead of 8 for
int64, which is what keeps 50 resident fp32 tasks, 6 bytes an entry, within 1.1x the memory of one model), or
1 x 16 row blocks with a 16-bit occupancy bitmap each (a 2:4 pattern's zeros: 0.5 bytes an entry). Tasks whose
2:4 patterns zero the same entries share one device copy of that list (a shared pattern is stored once per base,
and a switch between them leaves the zeros where they are, see edged.tasks.resident).
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from edged.errors import Corrupt, InvalidInput
from edged.tasks.delta import TaskDelta, pruned_indices
from edged.tasks.indices import BlockIndices, Indices, block_starts, encode_indices


@dataclass(frozen=True)
class Slot:
    dtype: torch.dtype  # which flat buffer
    offset: int  # first element in it
    shape: torch.Size

    @property
    def numel(self) -> int:
        return self.shape.numel()


class FlatWeights:
    """Rebinds `tensors` (state-dict name -> parameter or buffer, as `state_dict(keep_vars=True)` gives them)
    to views of one contiguous buffer per floating dtype. Tied tensors (one object under two names) share a slot.
    Integer buffers (BatchNorm's num_batches_tracked) stay where they are and are copied whole."""

    def __init__(self, tensors: dict[str, Tensor], index_format: str = "smaller", share_zeros: bool = True) -> None:
        self.index_format = index_format  # how placed deltas store their indices (edged.tasks.indices)
        self.share_zeros = share_zeros  # off: each task its own copy of its 2:4 zeros (the format before blocks)
        self.slots: dict[str, Slot] = {}
        self.whole: dict[str, Tensor] = {}
        by_object: dict[int, Slot] = {}
        sizes: dict[torch.dtype, int] = {}
        placed: list[tuple[Tensor, Slot]] = []
        for name, tensor in tensors.items():
            if not tensor.is_floating_point():
                self.whole[name] = tensor
            elif id(tensor) in by_object:
                self.slots[name] = by_object[id(tensor)]
            else:
                slot = Slot(tensor.dtype, sizes.get(tensor.dtype, 0), tensor.shape)
                sizes[tensor.dtype] = slot.offset + slot.numel
                self.slots[name] = by_object[id(tensor)] = slot
                placed.append((tensor, slot))
        self.device = placed[0][0].device if placed else torch.device("cpu")
        self.buffers = {dtype: torch.empty(size, dtype=dtype, device=self.device) for dtype, size in sizes.items()}
        # (dtype, form, first, sha256) -> zeroed indices on the device: one copy per 2:4 pattern, however many tasks
        self._zeros: weakref.WeakValueDictionary[tuple, Indices] = weakref.WeakValueDictionary()
        with torch.no_grad():
            for tensor, slot in placed:
                view = self.buffers[slot.dtype][slot.offset:slot.offset + slot.numel]
                view.copy_(tensor.reshape(-1))
                tensor.data = view.view(slot.shape)  # the module keeps its tensor object; its storage moves

    def place(self, delta: TaskDelta, source: str) -> "PlacedDelta":
        """`delta` as flat indices and values per buffer, on the buffers' device; Corrupt naming `source` if it
        does not fit the base. Tasks whose 2:4 patterns zero the same entries get one shared zeroed-index list."""
        parts: dict[torch.dtype, list[tuple[Tensor, Tensor, Tensor]]] = {dtype: [] for dtype in self.buffers}
        zeroed: dict[torch.dtype, list[tuple[Tensor, Tensor]]] = {dtype: [] for dtype in self.buffers}
        whole: dict[str, Tensor] = {}
        for name, (indices, values) in delta.sparse.items():
            slot = self._slot(name, source)
            if indices.shape != values.shape or indices.dim() != 1:
                raise Corrupt(f"{source}: {name} has {tuple(indices.shape)} indices for {tuple(values.shape)} values")
            if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= slot.numel):
                raise Corrupt(f"{source}: {name} has indices outside its {slot.numel} entries")
            local = indices.to(torch.int64)
            parts[slot.dtype].append((local + slot.offset, block_starts(local, slot.shape) + slot.offset,
                                      values.to(slot.dtype)))
        for name, bits in delta.pruned.items():  # the pattern expanded to the flat indices it zeroes
            slot = self._slot(name, source)
            trained = delta.sparse[name][0] if name in delta.sparse else None
            local = pruned_indices(bits, slot.numel, trained, f"{source}: {name}")
            zeroed[slot.dtype].append((local + slot.offset, block_starts(local, slot.shape) + slot.offset))
        for name, value in delta.dense.items():
            if name in self.whole:
                whole[name] = _checked_shape(value, self.whole[name].shape, name, source)
                continue
            slot = self._slot(name, source)
            value = _checked_shape(value, slot.shape, name, source)
            local = torch.arange(slot.numel)
            parts[slot.dtype].append((local + slot.offset, block_starts(local, slot.shape) + slot.offset,
                                      value.reshape(-1)))
        writes = {dtype: self._encode_values(dtype, pieces) for dtype, pieces in parts.items() if pieces}
        zeros = {dtype: self._shared(dtype, self._encode(dtype, torch.cat([i for i, _ in pieces]),
                                                         torch.cat([s for _, s in pieces])))
                 for dtype, pieces in zeroed.items() if pieces}
        return PlacedDelta(writes, whole, delta.head, {}).to(self.device).with_zeros(zeros)

    def _encode_values(self, dtype: torch.dtype, pieces: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Indices, Tensor]:
        """One buffer's written entries, (flat index, block start, value) pieces, as sorted indices and values."""
        indices, order = torch.cat([i for i, _, _ in pieces]).sort()
        starts, values = torch.cat([s for _, s, _ in pieces])[order], torch.cat([v for _, _, v in pieces])[order]
        return encode_indices(indices, starts, self.buffers[dtype].numel(), self.index_format), values

    def _encode(self, dtype: torch.dtype, indices: Tensor, starts: Tensor) -> Indices:
        """(nnz,) flat indices, each with its block's start, sorted and stored in this base's index format."""
        indices, order = indices.sort()
        return encode_indices(indices, starts[order], self.buffers[dtype].numel(), self.index_format)

    def _shared(self, dtype: torch.dtype, encoded: Indices) -> Indices:
        """The one device copy of these zeroed indices that placed deltas share; freed with the last of them."""
        if not self.share_zeros:
            return encoded.to(self.device)
        digest = hashlib.sha256()
        for part in (encoded.starts, encoded.bitmaps) if isinstance(encoded, BlockIndices) else (encoded.stored,):
            digest.update(part.numpy().tobytes())
        key = (dtype, type(encoded).__name__, encoded.first, digest.hexdigest())
        found = self._zeros.get(key)
        if found is None:
            found = self._zeros[key] = encoded.to(self.device)
        return found

    def _slot(self, name: str, source: str) -> Slot:
        if name not in self.slots:
            raise Corrupt(f"{source} names {name!r}, which its base model does not have "
                          f"(a delta fits only the base model its job adapted)")
        return self.slots[name]


@dataclass
class PlacedDelta:
    """A task's delta in a base's flat buffers: what the delta cache holds and a switch writes."""

    writes: dict[torch.dtype, tuple[Indices, Tensor]]  # buffer dtype -> (nnz flat indices, (nnz,) new values)
    whole: dict[str, Tensor]  # integer buffers, copied whole
    head: nn.Linear  # (classes, features) weight and (classes,) bias
    zeros: dict[torch.dtype, Indices] = field(default_factory=dict)  # buffer dtype -> 2:4 pruned flat indices

    @property
    def nbytes(self) -> int:
        """Bytes this placed delta holds (indices + values + zeroed indices + whole tensors + head); zeroed
        indices shared with other tasks are counted in each."""
        written = sum(i.nbytes + v.numel() * v.element_size() for i, v in self.writes.values())
        zeroed = sum(i.nbytes for i in self.zeros.values())
        whole = sum(t.numel() * t.element_size() for t in self.whole.values())
        return written + zeroed + whole + sum(p.numel() * p.element_size() for p in self.head.parameters())

    def with_zeros(self, zeros: dict[torch.dtype, Indices]) -> "PlacedDelta":
        return PlacedDelta(self.writes, self.whole, self.head, zeros)

    def to(self, device: torch.device) -> "PlacedDelta":
        return PlacedDelta({d: (i.to(device), v.to(device)) for d, (i, v) in self.writes.items()},
                           {n: t.to(device) for n, t in self.whole.items()}, self.head.to(device),
                           {d: i.to(device) for d, i in self.zeros.items()})

    def pinned(self) -> "PlacedDelta":
        """In page-locked host memory, so a copy to the GPU is one DMA (the warm tier of a CUDA cache)."""
        return PlacedDelta({d: (i.pinned(), v.pin_memory()) for d, (i, v) in self.writes.items()},
                           {n: t.pin_memory() for n, t in self.whole.items()}, self.head,
                           {d: i.pinned() for d, i in self.zeros.items()})


def _checked_shape(value: Tensor, shape: torch.Size, name: str, source: str) -> Tensor:
    if value.shape != shape:
        raise Corrupt(f"{source}: {name} is {tuple(value.shape)}, its base's is {tuple(shape)}")
    return value


def backbone_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters and persistent buffers by state-dict name, the head's left out (tasks swap it)."""
    tensors = {name: t for name, t in model.state_dict(keep_vars=True).items() if not name.startswith("head.")}
    if not tensors:
        raise InvalidInput("the resident model has no backbone parameters to write a task's delta into")
    return tensors

"""The resident base's backbone in one flat buffer per dtype, and task deltas placed into it.

Every floating parameter and buffer of the backbone becomes a view into its dtype's flat buffer, so a task's
delta, however many layers it touches, is one (nnz,) list of flat indices and one (nnz,) list of values per
buffer (one buffer for an fp32 or fp16 model). A switch is then three indexing kernels per buffer (restore,
save, write) instead of a Python loop over layers: on the GPU the launch overhead of ~50 layers x 3 ops was
the whole cost of a switch.

A 2:4 delta's keep-masks are expanded here into the flat indices they zero, kept apart from the written entries
(never overlapping them) and without values: a switch fills them with zeros (2 bytes an entry held, not 6) and
restores the base's values there like anywhere else.

A placed delta's indices are sorted and stored as int16 gaps between neighbours when every gap fits (at 0.1 %
density a gap is about a thousand elements), decoded by one cumulative sum at switch time: 2 bytes an entry
instead of 8 for int64, which is what keeps 50 resident fp32 tasks (6 bytes an entry) within 1.1x the memory
of one model. Otherwise they are int32 (int64 past 2**31 elements).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from edged.errors import Corrupt, InvalidInput
from edged.tasks.delta import TaskDelta, pruned_indices


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

    def __init__(self, tensors: dict[str, Tensor]) -> None:
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
        device = placed[0][0].device if placed else torch.device("cpu")
        self.buffers = {dtype: torch.empty(size, dtype=dtype, device=device) for dtype, size in sizes.items()}
        with torch.no_grad():
            for tensor, slot in placed:
                view = self.buffers[slot.dtype][slot.offset:slot.offset + slot.numel]
                view.copy_(tensor.reshape(-1))
                tensor.data = view.view(slot.shape)  # the module keeps its tensor object; its storage moves

    def place(self, delta: TaskDelta, source: str) -> "PlacedDelta":
        """`delta` as flat indices and values per buffer; Corrupt naming `source` if it does not fit the base."""
        parts: dict[torch.dtype, list[tuple[Tensor, Tensor]]] = {dtype: [] for dtype in self.buffers}
        zeroed: dict[torch.dtype, list[Tensor]] = {dtype: [] for dtype in self.buffers}
        whole: dict[str, Tensor] = {}
        for name, (indices, values) in delta.sparse.items():
            slot = self._slot(name, source)
            if indices.shape != values.shape or indices.dim() != 1:
                raise Corrupt(f"{source}: {name} has {tuple(indices.shape)} indices for {tuple(values.shape)} values")
            if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= slot.numel):
                raise Corrupt(f"{source}: {name} has indices outside its {slot.numel} entries")
            parts[slot.dtype].append((indices.to(torch.int64) + slot.offset, values.to(slot.dtype)))
        for name, bits in delta.pruned.items():  # the pattern expanded to the flat indices it zeroes
            slot = self._slot(name, source)
            trained = delta.sparse[name][0] if name in delta.sparse else None
            zeroed[slot.dtype].append(pruned_indices(bits, slot.numel, trained, f"{source}: {name}") + slot.offset)
        for name, value in delta.dense.items():
            if name in self.whole:
                whole[name] = _checked_shape(value, self.whole[name].shape, name, source)
                continue
            slot = self._slot(name, source)
            value = _checked_shape(value, slot.shape, name, source)
            parts[slot.dtype].append((torch.arange(slot.offset, slot.offset + slot.numel), value.reshape(-1)))
        writes = {}
        for dtype, pieces in parts.items():
            if pieces:
                indices, order = torch.cat([i for i, _ in pieces]).sort()
                values = torch.cat([v for _, v in pieces])[order]
                writes[dtype] = (FlatIndices.encode(indices, self.buffers[dtype].numel()), values)
        zeros = {dtype: FlatIndices.encode(torch.cat(pieces).sort().values, self.buffers[dtype].numel())
                 for dtype, pieces in zeroed.items() if pieces}
        return PlacedDelta(writes, whole, delta.head, zeros)

    def _slot(self, name: str, source: str) -> Slot:
        if name not in self.slots:
            raise Corrupt(f"{source} names {name!r}, which its base model does not have "
                          f"(a delta fits only the base model its job adapted)")
        return self.slots[name]


@dataclass
class FlatIndices:
    """(nnz,) sorted flat indices into one buffer: int16 gaps from `first` (gaps[0] = 0) when every gap fits,
    else the indices themselves (int32, or int64 past 2**31 elements)."""

    first: int
    stored: Tensor

    @staticmethod
    def encode(indices: Tensor, buffer_numel: int) -> "FlatIndices":
        """`indices`: (nnz,) int64, sorted."""
        if indices.numel():
            gaps = torch.diff(indices, prepend=indices[:1])
            if int(gaps.max()) <= torch.iinfo(torch.int16).max:
                return FlatIndices(int(indices[0]), gaps.to(torch.int16))
        return FlatIndices(0, indices.to(torch.int32) if buffer_numel < 2**31 else indices)

    def decode(self) -> Tensor:
        """(nnz,) int64 flat indices, on the device the gaps are on (one scan kernel and one add): int64 because
        `index_copy_` takes no other, and it writes 101k entries of ViT-B/16 in half the time of `index_put_`."""
        if self.stored.dtype != torch.int16:
            return self.stored.to(torch.int64)
        return torch.cumsum(self.stored, 0, dtype=torch.int64).add_(self.first)

    @property
    def nbytes(self) -> int:
        return self.stored.numel() * self.stored.element_size()

    def to(self, device: torch.device) -> "FlatIndices":
        return FlatIndices(self.first, self.stored.to(device))

    def pinned(self) -> "FlatIndices":
        return FlatIndices(self.first, self.stored.pin_memory())


@dataclass
class PlacedDelta:
    """A task's delta in a base's flat buffers: what the delta cache holds and a switch writes."""

    writes: dict[torch.dtype, tuple[FlatIndices, Tensor]]  # buffer dtype -> (nnz flat indices, (nnz,) new values)
    whole: dict[str, Tensor]  # integer buffers, copied whole
    head: nn.Linear  # (classes, features) weight and (classes,) bias
    zeros: dict[torch.dtype, FlatIndices] = field(default_factory=dict)  # buffer dtype -> 2:4 pruned flat indices

    @property
    def nbytes(self) -> int:
        """Bytes this placed delta holds (indices + values + zeroed indices + whole tensors + head)."""
        written = sum(i.nbytes + v.numel() * v.element_size() for i, v in self.writes.values())
        zeroed = sum(i.nbytes for i in self.zeros.values())
        whole = sum(t.numel() * t.element_size() for t in self.whole.values())
        return written + zeroed + whole + sum(p.numel() * p.element_size() for p in self.head.parameters())

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

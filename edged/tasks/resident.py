"""The resident base model of one base: every task on it is activated by writing its delta into the base's
weights in place, after restoring the entries the previous task changed, so a switch costs O(nnz of the
two tasks) and the base is never reloaded. The backbone lives in flat buffers (`edged.tasks.flat`), so a
switch is a few indexing kernels whatever the number of layers. The head is swapped as a module (tasks
differ in classes).

Not thread-safe by itself: the task server's one inference thread is its only user, so a forward never
sees a half-applied task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from edged.data.task import Inputs, TaskData, to_device
from edged.models.classifier import Classifier
from edged.tasks.delta import TaskDelta
from edged.tasks.flat import FlatWeights, PlacedDelta, backbone_tensors
from edged.tasks.indices import Indices


@dataclass
class SwitchCost:
    seconds: float  # wall time of restore + apply, the device synchronised before reading the clock
    bytes_moved: int  # bytes written into the base: the restored entries and the new task's


@dataclass
class Overwritten:
    """What an active task overwrote in one flat buffer: the base's values at its entries."""

    flat: Tensor  # the buffer
    indices: Tensor  # (nnz,) int64 flat indices
    values: Tensor  # (nnz,) the base's values there
    encoded: Indices  # the placed list they were decoded from (a shared 2:4 zeros list is one object)


@dataclass
class ResidentModel:
    model: Classifier
    preprocess: Callable[[TaskData], Inputs]
    device: torch.device
    index_format: str = "smaller"  # how placed deltas store their indices (edged.tasks.indices.INDEX_FORMATS)
    # restore only the outgoing task's entries the incoming one does not write (a set intersection per switch);
    # off by default: measured slower than restoring everything (README, "Task switching")
    skip_shared: bool = False
    share_zeros: bool = True  # tasks with one 2:4 pattern share its zeroed-index list (edged.tasks.flat)
    active: Optional[str] = None  # the task id whose delta is in the weights
    _writes: dict[torch.dtype, Overwritten] = field(default_factory=dict)  # by the active task's written entries
    _zeros: dict[torch.dtype, Overwritten] = field(default_factory=dict)  # by its 2:4 pattern's zeroed entries
    _saved_whole: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    flat: FlatWeights = field(init=False)

    def __post_init__(self) -> None:
        self.flat = FlatWeights(backbone_tensors(self.model), self.index_format, self.share_zeros)

    def place(self, delta: TaskDelta, source: str) -> PlacedDelta:
        """`delta` (parsed on the CPU) placed into this base's flat buffers, on this base's device."""
        return self.flat.place(delta, source)

    @torch.no_grad()
    def activate_(self, task_id: str, delta: PlacedDelta) -> SwitchCost:
        """Make `task_id` the model: restore the base where the active task wrote, then write `delta`. A 2:4
        zeros list the two tasks share stays in place; with `skip_shared`, so do the entries both write."""
        if task_id == self.active:
            return SwitchCost(0.0, 0)
        start = time.perf_counter()
        outgoing, self._writes = self._writes, {}
        moved, carried = self._restore_writes_(outgoing, delta)
        moved += self._switch_zeros_(delta)
        for dtype, (encoded, values) in delta.writes.items():
            flat = self.flat.buffers[dtype]
            indices = carried[dtype][0] if dtype in carried else encoded.decode()
            base = flat.index_select(0, indices)  # a copy of what gets overwritten
            if dtype in carried:  # where the outgoing task's value is still there, its saved base value is the base
                _, old, kept = carried[dtype]
                base[torch.isin(indices, old.indices, assume_unique=True)] = old.values[kept]
            self._writes[dtype] = Overwritten(flat, indices, base, encoded)
            flat.index_copy_(0, indices, values)
            moved += encoded.nbytes + values.numel() * values.element_size()
        moved += self._restore_whole_()
        for name, value in delta.whole.items():
            target = self.flat.whole[name]
            self._saved_whole.append((target, target.clone()))
            target.copy_(value)
            moved += value.numel() * value.element_size()
        self.model.head = delta.head
        moved += sum(p.numel() * p.element_size() for p in delta.head.parameters())
        self.active = task_id
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return SwitchCost(time.perf_counter() - start, moved)

    def _restore_writes_(self, outgoing: dict[torch.dtype, Overwritten], delta: PlacedDelta) -> tuple[
            int, dict[torch.dtype, tuple[Tensor, Overwritten, Tensor]]]:
        """Put the base back where the outgoing task wrote (with `skip_shared`, not where `delta` writes too).
        Returns the bytes written and, per buffer skipped in part, ((nnz,) the incoming indices, what the
        outgoing task overwrote, (nnz_out,) bool: which of its entries were left)."""
        moved, carried = 0, {}
        for dtype, old in outgoing.items():
            if self.skip_shared and dtype in delta.writes:
                indices = delta.writes[dtype][0].decode()
                kept = torch.isin(old.indices, indices, assume_unique=True)  # (nnz_out,) both write these
                restore = ~kept
                old.flat.index_copy_(0, old.indices[restore], old.values[restore])
                moved += int(restore.sum()) * old.values.element_size()
                carried[dtype] = (indices, old, kept)
            else:
                old.flat.index_copy_(0, old.indices, old.values)
                moved += old.values.numel() * old.values.element_size()
        return moved, carried

    def _switch_zeros_(self, delta: PlacedDelta) -> int:
        """The outgoing 2:4 zeros restored and the incoming ones written, unless both tasks share the list."""
        moved = 0
        for dtype, old in list(self._zeros.items()):
            if delta.zeros.get(dtype) is not old.encoded:
                old.flat.index_copy_(0, old.indices, old.values)
                moved += old.values.numel() * old.values.element_size()
                del self._zeros[dtype]
        for dtype, encoded in delta.zeros.items():  # never among the entries the task writes
            if dtype in self._zeros:
                continue  # the same pattern: its entries are zero already
            flat, indices = self.flat.buffers[dtype], encoded.decode()
            self._zeros[dtype] = Overwritten(flat, indices, flat.index_select(0, indices), encoded)
            flat.index_fill_(0, indices, 0.0)
            moved += encoded.nbytes + indices.numel() * flat.element_size()
        return moved

    @torch.no_grad()
    def deactivate_(self) -> int:
        """Back to the base's own weights (a deleted task leaves nothing behind); returns bytes written."""
        moved = 0
        for old in (*self._writes.values(), *self._zeros.values()):
            old.flat.index_copy_(0, old.indices, old.values)
            moved += old.values.numel() * old.values.element_size()
        self._writes.clear()
        self._zeros.clear()
        self.active = None
        return moved + self._restore_whole_()

    def _restore_whole_(self) -> int:
        moved = 0
        for target, value in self._saved_whole:
            target.copy_(value)
            moved += value.numel() * value.element_size()
        self._saved_whole.clear()
        return moved

    @torch.no_grad()
    def logits(self, inputs: Inputs) -> Tensor:
        """(N, classes) float32 logits of the active task on the CPU."""
        return self.model(to_device(inputs, self.device)).float().cpu()

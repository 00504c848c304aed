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


@dataclass
class SwitchCost:
    seconds: float  # wall time of restore + apply, the device synchronised before reading the clock
    bytes_moved: int  # bytes written into the base: the restored entries and the new task's


@dataclass
class ResidentModel:
    model: Classifier
    preprocess: Callable[[TaskData], Inputs]
    device: torch.device
    active: Optional[str] = None  # the task id whose delta is in the weights
    # what the active task overwrote: (flat buffer, (nnz,) indices, (nnz,) old values), and whole tensors
    _saved: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)
    _saved_whole: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    flat: FlatWeights = field(init=False)

    def __post_init__(self) -> None:
        self.flat = FlatWeights(backbone_tensors(self.model))

    def place(self, delta: TaskDelta, source: str) -> PlacedDelta:
        """`delta` (parsed on the CPU) placed into this base's flat buffers, on this base's device."""
        return self.flat.place(delta, source).to(self.device)

    @torch.no_grad()
    def activate_(self, task_id: str, delta: PlacedDelta) -> SwitchCost:
        """Make `task_id` the model: restore the base where the active task wrote, then write `delta`."""
        if task_id == self.active:
            return SwitchCost(0.0, 0)
        start = time.perf_counter()
        moved = self._restore_()
        for dtype, (encoded, values) in delta.writes.items():
            flat, indices = self.flat.buffers[dtype], encoded.decode()
            self._saved.append((flat, indices, flat.index_select(0, indices)))  # a copy of what gets overwritten
            flat.index_copy_(0, indices, values)
            moved += encoded.nbytes + values.numel() * values.element_size()
        for dtype, encoded in delta.zeros.items():  # 2:4 pruned entries, never among the written ones
            flat, indices = self.flat.buffers[dtype], encoded.decode()
            self._saved.append((flat, indices, flat.index_select(0, indices)))
            flat.index_fill_(0, indices, 0.0)
            moved += encoded.nbytes + indices.numel() * flat.element_size()
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

    @torch.no_grad()
    def deactivate_(self) -> int:
        """Back to the base's own weights (a deleted task leaves nothing behind); returns bytes written."""
        return self._restore_()

    def _restore_(self) -> int:
        moved = 0
        for flat, indices, values in self._saved:
            flat.index_copy_(0, indices, values)
            moved += values.numel() * values.element_size()
        for target, value in self._saved_whole:
            target.copy_(value)
            moved += value.numel() * value.element_size()
        self._saved.clear()
        self._saved_whole.clear()
        self.active = None
        return moved

    @torch.no_grad()
    def logits(self, inputs: Inputs) -> Tensor:
        """(N, classes) float32 logits of the active task on the CPU."""
        return self.model(to_device(inputs, self.device)).float().cpu()

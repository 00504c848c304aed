"""The resident base model of one base: every task on it is activated by writing its delta into the base's
weights in place, after restoring the entries the previous task changed, so a switch costs O(nnz of the
two tasks) and the base is never reloaded. The head is swapped as a module (tasks differ in classes).

Not thread-safe by itself: the task server's one inference thread is its only user, so a forward never
sees a half-applied task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from edged.data.task import Inputs, TaskData, to_device
from edged.errors import InvalidInput
from edged.models.classifier import Classifier
from edged.tasks.delta import TaskDelta

Saved = Union[tuple[Tensor, Tensor], Tensor]  # (flat indices, old values) or the whole old tensor


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
    _saved: dict[str, Saved] = field(default_factory=dict)  # what the active task overwrote
    _tensors: dict[str, Tensor] = field(default_factory=dict)  # state-dict name -> tensor, built once

    def __post_init__(self) -> None:
        # the backbone's parameters and buffers keep their identity; looking them up per switch would cost
        # a state_dict() walk of the whole model
        self._tensors = {name: t for name, t in self.model.state_dict().items() if not name.startswith("head.")}

    @torch.no_grad()
    def activate_(self, task_id: str, delta: TaskDelta) -> SwitchCost:
        """Make `task_id` the model: restore the base where the active task wrote, then write `delta`."""
        if task_id == self.active:
            return SwitchCost(0.0, 0)
        start = time.perf_counter()
        state = self._tensors
        moved = self._restore_(state)
        for name, (indices, values) in delta.sparse.items():
            flat = _target(state, name).view(-1)
            self._saved[name] = (indices, flat.index_select(0, indices))  # a copy: ~10x cheaper than flat[indices]
            flat[indices] = values.to(flat.dtype)
            moved += indices.numel() * indices.element_size() + values.numel() * values.element_size()
        for name, value in delta.dense.items():
            target = _target(state, name)
            self._saved[name] = target.clone()
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
        return self._restore_(self._tensors)

    def _restore_(self, state: dict[str, Tensor]) -> int:
        moved = 0
        for name, saved in self._saved.items():
            if isinstance(saved, tuple):
                indices, values = saved
                state[name].view(-1)[indices] = values
                moved += values.numel() * values.element_size()
            else:
                state[name].copy_(saved)
                moved += saved.numel() * saved.element_size()
        self._saved.clear()
        self.active = None
        return moved

    @torch.no_grad()
    def logits(self, inputs: Inputs) -> Tensor:
        """(N, classes) float32 logits of the active task on the CPU."""
        return self.model(to_device(inputs, self.device)).float().cpu()


def _target(state: dict[str, Tensor], name: str) -> Tensor:
    if name not in state:
        raise InvalidInput(f"the task's delta names {name!r}, which its base model does not have")
    return state[name]

"""The job's data, split once: training samples, the held-out validation split, and the calibration subset.

Every stage that needs data gets it from here: training, every evaluation (before, pruned, after,
compiled), the compile stage's example batch and the benchmark batch count the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from edged.data.task import Inputs, TaskData, take
from edged.methods.base import TaskBatches


@dataclass
class LabelledInputs:
    inputs: Inputs  # model-ready: (N, ...) tensor or dict of (N, L) tensors, on the CPU
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, size: int) -> Inputs:
        """The first `size` samples (all of them when fewer): the example and benchmark batch."""
        return take(self.inputs, slice(0, min(size, len(self))))


@dataclass
class DataSplit:
    train: LabelledInputs
    val: LabelledInputs
    calib: TaskBatches  # the calibration / scoring subset of the training samples, batched for the device
    test: Optional[LabelledInputs] = None  # a held-out test set given with the task: only ever evaluated


def split_task(task: TaskData, preprocess: Callable[[TaskData], Inputs], val_fraction: float, seed: int,
               calibration_samples: int, batch_size: int, device: torch.device,
               test_task: Optional[TaskData] = None) -> DataSplit:
    """Stratified train/validation split (deterministic in `seed`), preprocessed for the model, and the first
    `calibration_samples` of a seeded permutation of the training samples for calibration; a held-out test
    set, when given, preprocessed the same way."""
    train_task, val_task = task.split(val_fraction, seed)
    train_inputs, val_inputs = preprocess(train_task), preprocess(val_task)
    chosen = torch.randperm(len(train_task), generator=torch.Generator().manual_seed(seed))[:calibration_samples]
    calib = TaskBatches(take(train_inputs, chosen), train_task.y[chosen], batch_size, device)
    test = LabelledInputs(preprocess(test_task), test_task.y) if test_task is not None else None
    return DataSplit(LabelledInputs(train_inputs, train_task.y), LabelledInputs(val_inputs, val_task.y), calib, test)

"""A labelled task dataset held in memory, and the model-ready tensors made from it.

`TaskData` is what every upload format decodes to and what the adaptation core consumes.
`Inputs` is what a model's preprocessor makes of it: one tensor with samples on dim 0
(images (N, 3, H, W), tabular (N, F)) or a dict of such tensors (text: input_ids (N, L),
attention_mask (N, L)).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor

from edged.errors import InvalidInput

Kind = Literal["image", "text", "tabular"]
Inputs = Union[Tensor, dict[str, Tensor]]


@dataclass(frozen=True)
class TaskData:
    """Samples with integer labels in [0, len(classes)).

    x: images as uint8 (N, C, H, W) or float (N, C, H, W) in [0, 1], C in {1, 3};
       tabular as float (N, F); text as a list of N strings.
    y: int64 (N,).
    labelled: False for samples to predict (the task's classes, placeholder labels that nothing reads):
       only their inputs are validated.
    """

    kind: Kind
    x: Union[Tensor, list[str]]
    y: Tensor
    classes: list[str]
    labelled: bool = True

    def __post_init__(self) -> None:
        validate_task(self)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: Tensor) -> "TaskData":
        if isinstance(self.x, list):
            x: Union[Tensor, list[str]] = [self.x[i] for i in indices.tolist()]
        else:
            x = self.x[indices]
        return TaskData(self.kind, x, self.y[indices], self.classes, self.labelled)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple["TaskData", "TaskData"]:
        """Deterministic stratified train/validation split: same data and seed, same split."""
        if not 0.0 < val_fraction < 1.0:
            raise InvalidInput(f"val_fraction must be in (0, 1), got {val_fraction}")
        gen = torch.Generator().manual_seed(seed)
        train, val = stratified_split(self.y, range(len(self.classes)), val_fraction, gen)
        if len(val) == 0 or len(train) == 0:
            raise InvalidInput(
                f"dataset of {len(self)} samples is too small to split into training and validation",
                detail={"accepted": "at least 2 samples in at least one class"},
            )
        return self.subset(train), self.subset(val)

    def relabelled(self, classes: list[str]) -> "TaskData":
        """The same samples labelled by their class names' positions in `classes` (a held-out set's labels in
        its training set's order); InvalidInput naming the classes that `classes` lacks."""
        unknown = [name for name in self.classes if name not in classes]
        if unknown:
            raise InvalidInput(f"classes {unknown[:10]} are not among the training classes {classes[:20]}",
                               detail={"unknown": unknown, "accepted": classes})
        positions = torch.tensor([classes.index(name) for name in self.classes], dtype=torch.int64)
        return TaskData(self.kind, self.x, positions[self.y], list(classes), self.labelled)


def stratified_split(labels: Tensor, classes: Iterable[int], fraction: float,
                     generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(kept, held-out) sorted indices into `labels` (N,): each of `classes` in turn, a permutation of its
    members drawn from `generator`, the first round(members * fraction) held out, and where a class has two or
    more, at least one on each side."""
    kept, held = [], []
    for label in classes:
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = int(round(len(members) * fraction))
        if len(members) >= 2:
            n_held = min(max(n_held, 1), len(members) - 1)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def validate_task(task: TaskData) -> None:
    """Raise InvalidInput naming the first thing wrong with a dataset (with unlabelled samples, their inputs)."""
    if task.labelled:
        _validate_labels(task)
    elif len(task.x) != task.y.shape[0]:
        raise InvalidInput(f"{len(task.x)} samples but {task.y.shape[0]} placeholder labels")
    _validate_inputs(task)


def _validate_labels(task: TaskData) -> None:
    y = task.y
    if not isinstance(y, Tensor) or y.dim() != 1 or y.dtype != torch.int64:
        raise InvalidInput("labels must be a 1-d int64 tensor", detail={"got": _describe(y)})
    n = y.shape[0]
    if n == 0:
        raise InvalidInput("dataset is empty", detail={"accepted": "at least 2 samples of at least 2 classes"})
    num_x = len(task.x)
    if num_x != n:
        raise InvalidInput(f"dataset has {num_x} samples but {n} labels")
    if len(task.classes) < 2:
        raise InvalidInput(
            f"dataset has {len(task.classes)} class(es); classification needs at least 2",
            detail={"classes": list(task.classes)},
        )
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= len(task.classes):
        raise InvalidInput(
            f"labels must lie in [0, {len(task.classes) - 1}], found values in [{low}, {high}]",
            detail={"classes": list(task.classes)},
        )
    if len(torch.unique(y)) < 2:
        raise InvalidInput("all samples carry the same label; classification needs at least 2 classes")


def _validate_inputs(task: TaskData) -> None:
    if task.kind == "text":
        if not isinstance(task.x, list) or not all(isinstance(s, str) for s in task.x):
            raise InvalidInput("text datasets need x to be a list of strings")
        return
    x = task.x
    if not isinstance(x, Tensor):
        raise InvalidInput(f"{task.kind} datasets need x to be a tensor", detail={"got": _describe(x)})
    if task.kind == "image" and (x.dim() != 4 or x.shape[1] not in (1, 3)):
        raise InvalidInput("images must be shaped (N, C, H, W) with C = 1 or 3", detail={"shape": list(x.shape)})
    if task.kind == "tabular" and x.dim() != 2:
        raise InvalidInput("tabular data must be shaped (N, features)", detail={"shape": list(x.shape)})
    if x.is_floating_point():
        bad = _count_non_finite(x)
        if bad:
            raise InvalidInput(f"inputs contain {bad} NaN or infinite value(s)", detail={"accepted": "finite numbers"})


def _count_non_finite(x: Tensor, chunk: int = 1 << 20) -> int:
    """NaN and infinite values in `x`, counted a chunk at a time: no mask the size of the dataset."""
    flat = x.reshape(-1)
    return sum(int((~torch.isfinite(part)).sum()) for part in flat.split(chunk))


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype}"
    return type(value).__name__


def num_samples(inputs: Inputs) -> int:
    first = inputs if isinstance(inputs, Tensor) else next(iter(inputs.values()))
    return int(first.shape[0])


def take(inputs: Inputs, index: Union[Tensor, slice]) -> Inputs:
    """Samples `index` of model inputs, keeping their structure."""
    if isinstance(inputs, Tensor):
        return inputs[index]
    return {key: value[index] for key, value in inputs.items()}


def layout_key(inputs: Inputs) -> tuple:
    """What a CUDA graph's static copy of `inputs` fixes: each tensor's name, shape and dtype."""
    if isinstance(inputs, Tensor):
        return ((None, tuple(inputs.shape), inputs.dtype),)
    return tuple((key, tuple(value.shape), value.dtype) for key, value in sorted(inputs.items()))


def cloned(inputs: Inputs) -> Inputs:
    """A copy of model inputs in memory of its own (a CUDA graph's static inputs)."""
    if isinstance(inputs, Tensor):
        return inputs.clone()
    return {key: value.clone() for key, value in inputs.items()}


def copy_into(static: Inputs, inputs: Inputs) -> None:
    """Write `inputs` into `static`, which has its layout (`layout_key`), in place."""
    if isinstance(static, Tensor):
        static.copy_(inputs)  # type: ignore[arg-type]  # one layout, so one Tensor
        return
    for key, value in static.items():
        value.copy_(inputs[key])  # type: ignore[index]


def to_device(inputs: Inputs, device: Union[str, torch.device]) -> Inputs:
    if isinstance(inputs, Tensor):
        return inputs.to(device, non_blocking=True)
    return {key: value.to(device, non_blocking=True) for key, value in inputs.items()}


def batches(
    inputs: Inputs,
    labels: Inputs,
    batch_size: int,
    generator: Union[torch.Generator, None] = None,
) -> Iterator[tuple[Inputs, Any]]:
    """Mini-batches of (inputs, labels); shuffled when a generator is given (deterministic for its seed).
    `labels` may be a dict of per-sample tensors (e.g. labels and a teacher's logits)."""
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    n = num_samples(labels)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield take(inputs, index), take(labels, index)

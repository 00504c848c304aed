"""The model + dataset pairs `edged bench adapt` compares methods on, and the fixed subset a run uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from edged.data.bundled import bbc_news, digits, mnist_5k
from edged.data.task import TaskData


@dataclass(frozen=True)
class Pair:
    """A backbone and a bundled dataset; `model_options` are load_model's preprocessing options."""

    name: str
    model: str
    load: Callable[[], TaskData]
    model_options: dict[str, Any]


PAIRS = {
    "mnist": Pair("mnist", "mobilenet_v2", mnist_5k, {"image_size": 64}),
    # 8 x 8 digits upscaled: 32 px keeps MobileNetV2's last feature map at 1 x 1 and the run cheap on a CPU.
    "digits": Pair("digits", "mobilenet_v2", digits, {"image_size": 32}),
    "bbc": Pair("bbc", "minilm-l6", bbc_news, {"max_length": 128}),
}

SUBSET_SEED = 0  # the subset is the same for every training seed, so seeds vary only split, head and order


def subset(task: TaskData, samples: Optional[int], seed: int = SUBSET_SEED) -> TaskData:
    """A random subset of `samples` items fixed by `seed` (the whole task when None or larger)."""
    if samples is None or samples >= len(task):
        return task
    order = torch.randperm(len(task), generator=torch.Generator().manual_seed(seed))
    return task.subset(order[:samples].sort().values)


def with_options(pair: Pair, image_size: Optional[int], max_length: Optional[int]) -> Pair:
    """The pair with its image size or token limit overridden where given and where it applies."""
    options = dict(pair.model_options)
    if image_size is not None and "image_size" in options:
        options["image_size"] = image_size
    if max_length is not None and "max_length" in options:
        options["max_length"] = max_length
    return Pair(pair.name, pair.model, pair.load, options)

"""The rows of `edged bench adapt`: one method at its own (tuned or automatic) settings per row.

Every row runs `edged.pipeline.adapt.adapt` except those a `BenchRow` of another kind adds (a row is
anything with a label, a method name and `run`). TASO LoRA is given the parameter count LoRA r=1 trains
on the same backbone: its budget is solved from the layers' shapes before any scoring, when it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from edged.bench.adapt_pairs import Pair
from edged.bench.linear_probe import ROW_LABEL as PROBE_LABEL
from edged.bench.linear_probe import linear_probe_row
from edged.data.task import TaskData
from edged.methods.base import TaskBatches
from edged.methods.options import LowRankOptions
from edged.methods.registry import get_method
from edged.methods.taso_lora import DEFAULT_RANK as TASO_LORA_RANK  # the row's rank: the method's own
from edged.methods.taso_lora import core_sizes, layer_shapes
from edged.models.loader import load_model
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig

TASKEDGE = "taskedge 0.1%"
TASKEDGE_LP_FT = "taskedge 0.1% + head warm-up (LP-FT)"
MAGNITUDE = "magnitude 0.1%"
RANDOM = "random 0.1%"
LORA_8 = "LoRA r=8"
LORA_1 = "LoRA r=1"
TASO_LORA = "taso_lora at LoRA r=1's count"
COUNT_TOLERANCE = 0.01  # taso_lora trains LoRA r=1's count minus at most 1 % (floors per layer)


class BenchRow(Protocol):
    """One row of the table: `run` returns the keys of `RESULT_KEYS` (and may add its own)."""

    @property
    def label(self) -> str: ...

    @property
    def method(self) -> str: ...  # what --methods selects rows by

    def run(self, pair: Pair, task: TaskData, base: dict[str, Any]) -> dict[str, Any]: ...


RESULT_KEYS = ("row", "method", "accuracy", "trainable", "trainable_pct", "wall_s")


@dataclass(frozen=True)
class AdaptRow:
    """A method run through the real adaptation pipeline with these options on top of `base`."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def run(self, pair: Pair, task: TaskData, base: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        loaded = load_model(pair.model, len(task.classes), seed=base["seed"], **pair.model_options)
        config = AdaptConfig(method=self.method, **{**base, **self.options})
        metrics = adapt(loaded.model, loaded.preprocess, task, config).metrics
        return {"row": self.label, "method": self.method, "accuracy": metrics["accuracy_after"],
                "trainable": metrics["trainable_params"], "trainable_pct": 100 * metrics["trainable_fraction"],
                "wall_s": time.perf_counter() - started, "head_params": metrics["head_params"],
                "train_s": metrics["stage_seconds"]["train"], "samples_per_s": metrics["samples_per_s"],
                "lr_search": metrics.get("lr_search"), "head_warmup": metrics.get("head_warmup"),
                "accuracy_trained_head": (metrics.get("head_refit") or {}).get("val_accuracy_trained_head"),
                "batchnorm_reestimated": metrics["batchnorm_reestimated"],
                "peak_memory_mb": metrics["peak_memory_mb"], "accuracy_before": metrics["accuracy_before"],
                "stage_seconds": metrics["stage_seconds"], "config": config.model_dump()}


def lora_entries_(model: torch.nn.Module, rank: int) -> int:
    """Entries LoRA at `rank` trains on the model's backbone, counted by preparing it (in place) on the model."""
    no_batches = TaskBatches(torch.empty(0), torch.empty(0, dtype=torch.int64))  # LoRA reads no data to prepare
    return get_method("lora").function(model, no_batches, LowRankOptions(lora_rank=rank), None).entries


def taso_lora_budget(shapes: dict[str, tuple[int, int]], target: int, rank: int) -> tuple[float, int]:
    """The budget (fraction of the weights) at which taso_lora trains the most entries <= `target`, and that count.

    The count is a non-decreasing step function of the budget's entry count, so bisection finds it.
    """
    total = sum(out * fan_in for out, fan_in in shapes.values())

    def entries(budget: int) -> int:
        return rank * sum(rows + cols for rows, cols in core_sizes(shapes, budget, rank).values())

    low, high = 1, total  # entries(low) <= target < entries(high + 1) is kept
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if entries(middle) <= target else (low, middle - 1)
    return low / total, entries(low)


def matched_taso_lora_budget(pair: Pair) -> float:
    """taso_lora's budget at which it trains LoRA r=1's entry count on the pair's backbone (within the tolerance)."""
    model = load_model(pair.model, 2, seed=0, **pair.model_options).model
    shapes = layer_shapes(model)  # before LoRA wraps the layers
    return taso_lora_budget(shapes, lora_entries_(model, 1), TASO_LORA_RANK)[0]


@dataclass(frozen=True)
class CountMatchedTasoLoraRow:
    """taso_lora at LoRA r=1's parameter count: the budget is solved for each pair's backbone when it runs."""

    label: str = TASO_LORA
    method: str = "taso_lora"

    def run(self, pair: Pair, task: TaskData, base: dict[str, Any]) -> dict[str, Any]:
        options = {"budget": matched_taso_lora_budget(pair), "lora_rank": TASO_LORA_RANK}
        return AdaptRow(self.label, self.method, options).run(pair, task, base)


@dataclass(frozen=True)
class LinearProbeRow:
    """An independent linear probe (scikit-learn, `edged.bench.linear_probe`) on the head-only row's split and
    backbone: what head-only should reach. Selected with the head-only row (`--methods head`)."""

    label: str = PROBE_LABEL
    method: str = "head"

    def run(self, pair: Pair, task: TaskData, base: dict[str, Any]) -> dict[str, Any]:
        return {**linear_probe_row(pair.model, pair.model_options, task, base), "method": self.method}


def lr_grid_rows(lrs: list[float], head_lrs: list[float]) -> list[BenchRow]:
    """taskedge at 0.1 % with each fixed (lr, head_lr): the grid the automatic rates are compared with."""
    return [AdaptRow(f"{TASKEDGE} lr={lr:g} head_lr={head_lr:g}", "taskedge",
                     {"budget": 0.001, "lr": lr, "head_lr": head_lr}) for lr in lrs for head_lr in head_lrs]


# The rows; sparse rows at 0.1 % of the backbone, LoRA ranks as labelled, learning rates "auto" (the
# default), the rest at method defaults.
ROWS: list[BenchRow] = [
    AdaptRow(TASKEDGE, "taskedge", {"budget": 0.001}),
    AdaptRow(MAGNITUDE, "magnitude", {"budget": 0.001}),
    AdaptRow(RANDOM, "random", {"budget": 0.001}),
    AdaptRow("fisher 0.1%", "fisher", {"budget": 0.001}),
    AdaptRow("taso 0.1%", "taso", {"budget": 0.001}),
    AdaptRow(TASKEDGE_LP_FT, "taskedge", {"budget": 0.001, "head_warmup": True}),
    AdaptRow("head only", "head"),
    LinearProbeRow(),
    AdaptRow("BatchNorm + head", "bn_bias"),
    AdaptRow(LORA_8, "lora", {"lora_rank": 8}),
    AdaptRow(LORA_1, "lora", {"lora_rank": 1}),
    CountMatchedTasoLoraRow(),
    AdaptRow("full fine-tuning", "full"),
    AdaptRow("masked LoRA (taskedge 0.1%, r=8)", "taskedge_lora", {"budget": 0.001, "lora_rank": 8}),
]

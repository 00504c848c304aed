"""`edged bench align --part 2:4`: what one 2:4 pattern shared by the tasks on a base costs in accuracy.

The same real tasks as the block part (label groupings of the same MNIST digits on one base), each pruned to
2:4 and recovered by taskedge training inside the kept positions, three ways:
- own: the task's own pattern, by its own importance (|W| * ||X||_2 on its calibration data);
- shared, first task: the pattern the first task chose (what the daemon does: the base's first 2:4 task sets it);
- shared, combined: one pattern from the combined importance of every task's calibration
  (`edged.sparse.shared_pattern.combined_importance`), made before any task trains.
With a shared pattern, a switch between the tasks changes values only (the zeros stay put).
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from torch import Tensor

from edged.bench.align_tasks import grouping_task
from edged.data.bundled import mnist_5k
from edged.methods.base import backbone_layers
from edged.methods.taskedge import importance
from edged.models.loader import load_model
from edged.pipeline.adapt import AdaptResult, adapt
from edged.pipeline.config import AdaptConfig
from edged.sparse.shared_pattern import combined_importance, pattern_from_scores


def _adapt(model: str, task, image_size: int, config: AdaptConfig,
           pattern: Optional[dict[str, Tensor]]) -> tuple[AdaptResult, float]:
    loaded = load_model(model, len(task.classes), seed=0, image_size=image_size)
    started = time.perf_counter()
    result = adapt(loaded.model, loaded.preprocess, task, config, shared_pattern=pattern)
    return result, time.perf_counter() - started


def _base_scores(model: str, image_size: int, result: AdaptResult) -> dict[str, Tensor]:
    """|W| * ||X||_2 of the unpruned base on the task's calibration data (the run's calibration pass)."""
    base = load_model(model, 2, seed=0, image_size=image_size).model  # the backbone is the same whatever the head
    assert result.calibration is not None, "a 2:4 run calibrates"
    return importance(base, result.calibration)


def _kept_overlap(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """Share of kept positions two patterns have in common (0.5 expected for unrelated 2:4 patterns)."""
    common = sum(int((a[name] & b[name]).sum()) for name in a)
    return common / sum(int(mask.sum()) for mask in a.values())


def run(model: str, samples: int, image_size: int, epochs: int, budget: float, device: str,
        tasks: list[str]) -> list[dict]:
    digits = mnist_5k().subset(torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:samples])
    config = AdaptConfig(method="taskedge", budget=budget, epochs=epochs, lr=0.01, head_lr=0.01, device=device,
                         sparsity="2:4", dense_reference=False, share_2_4=True)
    rows: list[dict] = []
    own_patterns: list[dict[str, Tensor]] = []
    scores: list[dict[str, Tensor]] = []
    for grouping in tasks:  # own pattern first: it also gives each task's calibration for the combined pattern
        task = grouping_task(digits, grouping)
        result, seconds = _adapt(model, task, image_size, config.model_copy(update={"share_2_4": False}), None)
        assert result.pruning is not None
        own_patterns.append(result.pruning.keep_masks)
        scores.append(_base_scores(model, image_size, result))
        rows.append({"task": grouping, "classes": len(task.classes), "accuracy_own": result.metrics["accuracy_after"],
                     "pattern_overlap_first": _kept_overlap(result.pruning.keep_masks, own_patterns[0]),
                     "wall_s_own": seconds})
    base = load_model(model, 2, seed=0, image_size=image_size).model
    combined = pattern_from_scores(combined_importance(scores), backbone_layers(base))
    for row, grouping, own in zip(rows, tasks, own_patterns):
        task = grouping_task(digits, grouping)
        if own is own_patterns[0]:
            row["accuracy_shared_first"] = row["accuracy_own"]  # the first task's pattern is its own: the same run
        else:
            result, _ = _adapt(model, task, image_size, config, own_patterns[0])
            row["accuracy_shared_first"] = result.metrics["accuracy_after"]
        result, row["wall_s_shared_combined"] = _adapt(model, task, image_size, config, combined)
        row["accuracy_shared_combined"] = result.metrics["accuracy_after"]
        row["pattern_overlap_combined"] = _kept_overlap(own, combined)
    return rows


COLUMNS = [("task", "task"), ("classes", "classes"), ("accuracy_own", "acc 2:4 own pattern"),
           ("accuracy_shared_first", "acc 2:4 shared (first task's)"),
           ("accuracy_shared_combined", "acc 2:4 shared (combined)"),
           ("pattern_overlap_first", "own kept in first's"), ("pattern_overlap_combined", "own kept in combined")]

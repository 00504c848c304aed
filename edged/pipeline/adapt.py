"""`adapt()`: one adaptation in process, the library's entry point over the job's own stages (those that are
not job-only: see `edged.pipeline.stages`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from torch import Tensor, nn

from edged.calibrate import CalibrationResult
from edged.data.task import Inputs, TaskData
from edged.devices import resolve_device
from edged.methods import get_method
from edged.methods.base import Adaptation
from edged.pipeline.config import AdaptConfig
from edged.pipeline.metrics import adapt_metrics
from edged.pipeline.split import DataSplit
from edged.pipeline.stages import ADAPT_STAGES, run_stages
from edged.pipeline.state import AdaptRun, made
from edged.pipeline.timer import ProgressCallback, StageTimer
from edged.sparse.nm import PruneReport


@dataclass
class AdaptResult:
    model: nn.Module  # merged: plain dense layers with the adaptation folded in
    adaptation: Adaptation
    metrics: dict
    calibration: Optional[CalibrationResult] = None
    history: list[dict] = field(default_factory=list)
    pruning: Optional[PruneReport] = None  # with sparsity 2:4: keep masks and the layers left dense
    split: Optional[DataSplit] = None  # the train / validation / calibration samples the stages used
    int8_ranges: Optional[dict[str, Tensor]] = None  # quantize int8: layer inputs' (amax, percentile), adapted model
    int8_drift: Optional[dict[str, float]] = None  # how those moved since the calibration pass


def adapt(
    model: nn.Module,
    preprocess: Callable[[TaskData], Inputs],
    task: TaskData,
    config: AdaptConfig,
    on_progress: Optional[ProgressCallback] = None,
    workdir: Optional[Path] = None,
    aligned_blocks: Optional[dict[str, Tensor]] = None,
    shared_pattern: Optional[dict[str, Tensor]] = None,
) -> AdaptResult:
    """Adapt `model` (a Classifier whose head matches the task's classes) to `task`, in place.

    `on_progress` gets every stage's started/finished event and training's step and epoch events; with a
    `workdir`, stage outputs are kept there and a second call on it resumes where the first one stopped.
    `aligned_blocks` (layer -> blocks earlier tasks use, `edged.sparse.blocks`) with `config.align_strength`
    steers the mask toward those blocks. `shared_pattern` (weight -> bool 2:4 keep-mask, the base's) is what a
    2:4 run with `config.share_2_4` prunes to instead of choosing its own pattern.
    """
    device = resolve_device(config.device)
    run = AdaptRun(config, get_method(config.method), device, StageTimer(on_progress), workdir, on_progress,
                   model, preprocess, task, aligned_blocks=aligned_blocks, shared_pattern=shared_pattern)
    run_stages(run, ADAPT_STAGES)
    return AdaptResult(model, made(run.adaptation, "mask or prepare_method"), adapt_metrics(run), run.calibration,
                       made(run.training, "train").history, run.pruning, run.split, run.int8_ranges, run.int8_drift)

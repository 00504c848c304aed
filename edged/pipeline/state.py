"""What the stages of one adaptation hand each other (`AdaptRun`), and what a job's stages add (`JobRun`).

Each stage reads the fields earlier stages made and sets its own; `made(value, stage)` states which stage
a field comes from where a later one needs it. Weights pass between stages as the model itself: dense
tensors keyed by parameter name, zeros where pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import torch
from torch import Tensor, nn

from edged.calibrate import CalibrationResult
from edged.compile.base import CompiledModel
from edged.data.task import Inputs, TaskData
from edged.methods.base import Adaptation
from edged.methods.registry import MethodEntry
from edged.models.registry import ModelInfo
from edged.models.sources import ModelSources
from edged.pipeline.config import AdaptConfig
from edged.pipeline.split import DataSplit
from edged.pipeline.timer import ProgressCallback, StageTimer
from edged.sparse.nm import PruneReport
from edged.train.batchnorm_stats import BatchNormReestimate
from edged.train.loop import TrainResult
from edged.train.memory_plan import TrainingPlan

T = TypeVar("T")


def made(value: Optional[T], stage: str) -> T:
    """`value`, which stage `stage` makes; an error in the stage order if it has not run."""
    if value is None:
        raise RuntimeError(f"the {stage!r} stage has not run before a stage that needs its output")
    return value


@dataclass
class AdaptRun:
    config: AdaptConfig
    method: MethodEntry
    device: torch.device
    timer: StageTimer
    workdir: Optional[Path] = None  # stage outputs kept for resume (calibration, mask, checkpoints)
    on_progress: Optional[ProgressCallback] = None
    # the model and the task: given to adapt(), loaded by a job's validate stage
    model: Optional[nn.Module] = None  # a Classifier whose head matches the task's classes
    preprocess: Optional[Callable[[TaskData], Inputs]] = None
    task: Optional[TaskData] = None
    test_task: Optional[TaskData] = None  # a held-out test set: evaluated, never trained or selected on
    # made by the stages, in the order they run
    split: Optional[DataSplit] = None
    amp_dtype: Optional[torch.dtype] = None
    accuracy_before: Optional[float] = None
    accuracy_dense_adapted: Optional[float] = None
    teacher_logits: Optional[Tensor] = None  # (N train, classes): the dense reference's, when distilling
    calibration: Optional[CalibrationResult] = None
    shared_pattern: Optional[dict[str, Tensor]] = None  # weight -> bool keep-mask: the base's 2:4 pattern, if any
    pruning: Optional[PruneReport] = None
    recalibrated: list[str] = field(default_factory=list)  # BatchNorm buffers re-estimated after pruning
    accuracy_pruned: Optional[float] = None
    aligned_blocks: Optional[dict[str, Tensor]] = None  # layer -> (out, blocks) bool: what earlier tasks use
    scores: Optional[dict[str, Tensor]] = None  # None also when the mask came from the work dir
    masks: Optional[dict[str, Tensor]] = None
    adaptation: Optional[Adaptation] = None
    head_warmup: Optional[dict[str, Any]] = None  # the LP-FT head fit's record (weight decay, val accuracy)
    lr_search: Optional[dict[str, Any]] = None  # the automatic learning rates' search summary, when it ran
    lr_search_ran: bool = False  # whether this process ran it (else a resumed job's cached summary)
    training_plan: Optional[TrainingPlan] = None  # the recomputation policy and micro-batch training ran with
    training: Optional[TrainResult] = None
    batchnorm: Optional[BatchNormReestimate] = None  # statistics re-estimated after training, where they apply
    head_refit: Optional[dict[str, Any]] = None  # the head refit on the adapted features: its record
    accuracy_after: Optional[float] = None
    test_accuracy_before: Optional[float] = None  # on test_task, when there is one
    test_accuracy_after: Optional[float] = None
    int8_ranges: Optional[dict[str, Tensor]] = None  # layer -> (amax, percentile) of its input, adapted model
    int8_drift: Optional[dict[str, float]] = None  # how those moved since the calibration pass

    @property
    def eval_batch(self) -> int:
        return max(self.config.batch_size, 64)

    def stage_progress(self, done: int, total: int) -> None:
        """`done` of `total` units of the running stage's work (calibration's samples, compile's phases), as a
        `progress` event: a job's bar moves through the stage's span."""
        if self.on_progress is not None:
            self.on_progress({"type": "progress", "done": done, "total": total})


@dataclass
class JobRun(AdaptRun):
    """A job's run: the adaptation's stages between loading the job's inputs and recording its metrics."""

    model_spec: str = ""  # what `load_model` takes: a registered name, a directory or module:factory[=weights]
    model_options: dict[str, Any] = field(default_factory=dict)  # load_model's keyword options
    model_sources: Optional[ModelSources] = None  # where model files and factories may come from
    compile_backend: str = "none"
    load_task: Optional[Callable[[], TaskData]] = None  # the job's dataset, read and verified from the store
    load_test_task: Optional[Callable[[], Optional[TaskData]]] = None  # its held-out test set as uploaded, if any
    # layer name -> weight shape, to the blocks the base's published tasks use (edged.sparse.blocks)
    load_aligned_blocks: Optional[Callable[[dict[str, torch.Size]], dict[str, Tensor]]] = None
    # the base's shared 2:4 pattern, name -> bool keep-mask, or None while the base has none
    load_pattern: Optional[Callable[[], Optional[dict[str, Tensor]]]] = None
    store_artifact: Optional[Callable[[str, Path, str], None]] = None  # (name, file, media type) as a job artifact
    model_info: Optional[ModelInfo] = None
    compiled: Optional[CompiledModel] = None
    compile_metrics: Optional[dict[str, Any]] = None
    latency: Optional[dict[str, Any]] = None
    metrics: Optional[dict[str, Any]] = None

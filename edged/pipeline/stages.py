"""The stages of a job, in order, declared once: what runs, when it applies, how much of the job's 0..1
progress bar it fills (its weight among the stages that run: `progress_plan`). `adapt()` runs the
adaptation's stages (those not marked `job_only`); a job runs them all, between loading its inputs and
recording its metrics:

validate -> prepare -> evaluate_before -> [dense_reference] -> [calibrate] -> [prune -> evaluate_pruned]
-> score -> mask | prepare_method -> train -> merge -> [reestimate_batchnorm] -> [refit_head] -> evaluate
-> [int8_ranges] -> export -> [compile] -> benchmark -> record
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from edged.pipeline import adapt_stages, job_stages
from edged.pipeline.stage_cache import cached_dense_reference
from edged.pipeline.state import AdaptRun, JobRun, made
from edged.pipeline.timer import ProgressCallback, StageTimer
from edged.train.evaluate import predict_logits


@dataclass(frozen=True)
class Stage:
    name: str
    # its share of the progress bar, relative to the other stages that run: an estimate of its share of a job's
    # wall time (a training run most of it, a dense reference as much again). A stage that reports its own progress
    # (training's steps, calibration's samples, compile's phases) moves the bar through its span; the others
    # jump over theirs.
    weight: float
    run: Callable[[AdaptRun], Optional[int]]  # returns the items it processed, where that is a rate worth keeping
    applies: Callable[[AdaptRun], bool] = lambda run: True
    job_only: bool = False  # needs a job's inputs and outputs (a JobRun)


def _job_stage(fn: Callable[[JobRun], None]) -> Callable[[AdaptRun], Optional[int]]:
    def run(state: AdaptRun) -> None:
        assert isinstance(state, JobRun), "a job stage runs inside a job"
        fn(state)

    return run


def _prunes(run: AdaptRun) -> bool:
    return run.config.prunes_2_4


def _int8(run: AdaptRun) -> bool:
    return run.config.quantize == "int8"


def _sparse(run: AdaptRun) -> bool:
    """A sparse method: it scores, then trains the masked entries (its mask may come from the work dir)."""
    return run.method.kind == "sparse"


def dense_reference(run: AdaptRun) -> None:
    """The same adaptation on an unpruned copy of the model: its validation accuracy (what 2:4 is compared
    with) and, when distilling, its logits on the training samples (N, classes) as the recovery's teacher.
    Runs with its own RNG stream (the 2:4 run depends on it only through the teacher) and its own work dir,
    where its results are kept, so a resumed job does not train it again."""
    ref_dir = run.workdir / "dense_reference" if run.workdir else None

    def compute() -> tuple[float, Optional[torch.Tensor]]:
        reference = AdaptRun(
            run.config.model_copy(update={"sparsity": "none", "dense_reference": False, "quantize": "none"}),
            run.method, run.device,
            StageTimer(_reference_progress(run.on_progress)), ref_dir, _reference_progress(run.on_progress),
            copy.deepcopy(made(run.model, "validate")), run.preprocess, run.task, split=run.split)
        with torch.random.fork_rng(devices=[run.device.index or 0] if run.device.type == "cuda" else []):
            run_stages(reference, ADAPT_STAGES)
        teacher = None
        if run.config.distill_weight > 0:
            teacher = predict_logits(made(reference.model, "validate"), made(run.split, "prepare").train.inputs,
                                     run.eval_batch, run.device, run.amp_dtype)
        return made(reference.accuracy_after, "evaluate"), teacher

    run.accuracy_dense_adapted, run.teacher_logits = cached_dense_reference(ref_dir, compute)


def _reference_progress(on_progress: Optional[ProgressCallback]) -> Optional[ProgressCallback]:
    """The reference run's events for the job: epochs (and a step at most once a second, which also
    lets a cancel or a stop act, and fills the job's "dense_reference" span) as `dense_reference_*`; its
    stages, and their own progress (its calibration's), stay inside "dense_reference"."""
    if on_progress is None:
        return None
    last_step = [0.0]

    def forward(event: dict) -> None:
        if event["type"] not in ("step", "epoch"):
            return
        if event["type"] == "step":
            if time.monotonic() - last_step[0] < 1.0:
                return
            last_step[0] = time.monotonic()
        on_progress({**event, "type": f"dense_reference_{event['type']}"})

    return forward


STAGES: tuple[Stage, ...] = (
    Stage("validate", 1, _job_stage(job_stages.validate), job_only=True),
    Stage("prepare", 1, adapt_stages.prepare),
    Stage("evaluate_before", 1, adapt_stages.evaluate_before),
    Stage("dense_reference", 60, dense_reference, lambda run: _prunes(run) and run.config.dense_reference),
    Stage("calibrate", 4, adapt_stages.calibrate, lambda run: run.method.needs_calibration or _prunes(run)),
    Stage("prune", 1, adapt_stages.prune, _prunes),
    Stage("evaluate_pruned", 1, adapt_stages.evaluate_pruned, _prunes),
    Stage("score", 1, adapt_stages.score, lambda run: _sparse(run) and run.masks is None),
    Stage("mask", 1, adapt_stages.mask, _sparse),
    Stage("prepare_method", 1, adapt_stages.prepare_method, lambda run: not _sparse(run)),
    Stage("train", 60, adapt_stages.train_stage),
    Stage("merge", 1, adapt_stages.merge),
    Stage("reestimate_batchnorm", 1, adapt_stages.reestimate_batchnorm, adapt_stages.reestimates_batchnorm),
    Stage("refit_head", 1, adapt_stages.refit_head, adapt_stages.refits_head),
    Stage("evaluate", 1, adapt_stages.evaluate),
    Stage("int8_ranges", 4, adapt_stages.int8_ranges, _int8),
    Stage("export", 1, _job_stage(job_stages.export), job_only=True),
    Stage("compile", 10, _job_stage(job_stages.compile_stage),
          lambda run: isinstance(run, JobRun) and run.compile_backend != "none", job_only=True),
    Stage("benchmark", 2, _job_stage(job_stages.benchmark), job_only=True),
    Stage("record", 1, _job_stage(job_stages.record), job_only=True),
)
ADAPT_STAGES = tuple(stage for stage in STAGES if not stage.job_only)


def progress_plan(run: AdaptRun, stages: tuple[Stage, ...]) -> dict[str, tuple[float, float]]:
    """Each stage that will run -> its (start, end) on the 0..1 progress scale, in order, spans in proportion to
    the weights. Decided before the first stage: a stage that then does not run (`score`, when an interrupted
    run's mask is found) leaves its span to be jumped over."""
    running = [stage for stage in stages if stage.applies(run)]
    total = sum(stage.weight for stage in running)
    plan, start = {}, 0.0
    for stage in running:
        end = start + stage.weight / total
        plan[stage.name] = (round(start, 4), round(end, 4))
        start = end
    return plan


def run_stages(run: AdaptRun, stages: tuple[Stage, ...]) -> None:
    """Each stage that applies, in order, timed (and metered, in a job) by the run's timer."""
    for stage in stages:
        if stage.applies(run):
            with run.timer.stage(stage.name) as count:
                count.items = stage.run(run)

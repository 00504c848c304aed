"""One job, run by the worker process: every stage of `edged.pipeline.stages`, in order, on a JobRun.

Stage outputs live in the job's work directory (calibration, mask, dense reference, training checkpoints),
so running a job again on the same directory resumes after its last finished stage and epoch. The caller
hands in the store as callables and the progress sink, which first gets the job's progress plan (every stage
that will run -> its span of the 0..1 bar); every stage is timed and metered by one StageTimer, whose
measurements go to `record_stage` (the job's stage telemetry rows) as each stage ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from edged.data.task import TaskData
from edged.devices import resolve_device
from edged.methods import get_method
from edged.models.sources import ModelSources
from edged.pipeline.config import JobConfig
from edged.pipeline.stages import STAGES, progress_plan, run_stages
from edged.pipeline.state import JobRun, made
from edged.pipeline.timer import ProgressCallback, StageRecorder, StageTimer
from edged.telemetry.reading import PowerSource


def run_job(config: JobConfig, model_spec: str, workdir: Path, sources: ModelSources,
            load_task: Callable[[], TaskData], store_artifact: Callable[[str, Path, str], None],
            on_progress: ProgressCallback, power: PowerSource, record_stage: StageRecorder,
            load_aligned_blocks: Optional[Callable[[dict[str, torch.Size]], dict[str, Tensor]]] = None,
            load_pattern: Optional[Callable[[], Optional[dict[str, Tensor]]]] = None,
            load_test_task: Optional[Callable[[], Optional[TaskData]]] = None) -> dict[str, Any]:
    """Run the job's stages to the end; returns its metrics. Raises on failure (or when `on_progress` stops it)."""
    adapt_config = config.adapt
    run = JobRun(adapt_config, get_method(adapt_config.method), resolve_device(adapt_config.device),
                 StageTimer(on_progress, power, record_stage), workdir, on_progress,
                 model_spec=model_spec, model_options=config.model_options, model_sources=sources,
                 compile_backend=config.compile, load_task=load_task, store_artifact=store_artifact,
                 load_aligned_blocks=load_aligned_blocks, load_pattern=load_pattern, load_test_task=load_test_task)
    on_progress({"type": "plan", "stages": {name: list(span) for name, span in progress_plan(run, STAGES).items()}})
    run_stages(run, STAGES)
    metrics = made(run.metrics, "record")
    metrics["stage_seconds"] = dict(run.timer.seconds)  # every stage, in the order it ran, `record` included
    return metrics

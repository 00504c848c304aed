"""One job, in the worker process: validate -> adapt (calibrate, [prune], score, mask, train, evaluate)
-> export -> [compile] -> benchmark -> record.

Stage outputs live in the job's work directory (calibration, mask, training checkpoints: see
`edged.adapt.stage_cache` and `edged.train.checkpoint`), so running the pipeline again on the same
directory resumes after the last finished stage and epoch instead of starting over. Every stage,
the core's included, gets a `job_stage_telemetry` row (wall time, energy, peak memory).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import sqlite_utils
import torch

from edged.adapt.config import AdaptConfig
from edged.adapt.run import AdaptResult, adapt, write_outputs
from edged.compile.base import CompiledModel
from edged.errors import InvalidInput
from edged.jobs import records
from edged.jobs.benchmark import benchmark_latency
from edged.jobs.compile_stage import ValidationSplit, compile_merged, store_compiled_artifacts, validation_split
from edged.jobs.progress import ProgressReporter
from edged.jobs.stage_telemetry import JobTelemetry, open_job_power_source
from edged.jobs.states import JobState
from edged.models.registry import load_model
from edged.models.sources import ModelSources
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.datasets import load_task

ARTIFACT_NAMES = {"delta": "delta.safetensors", "merged": "merged.safetensors"}


def run_pipeline(settings: Settings, db: sqlite_utils.Database, blobs: BlobStore, job: dict[str, Any],
                 job_dir: Path, reporter: ProgressReporter) -> dict[str, Any]:
    """Run `job` to the end and record it as succeeded; returns its metrics. Raises on failure or stop."""
    source = open_job_power_source(settings)
    try:
        with JobTelemetry(db, job["id"], reporter, source) as telemetry:
            metrics = _run_stages(ModelSources.from_settings(settings), db, blobs, job, job_dir, telemetry)
    finally:
        source.close()
    records.finish_running(db, job["id"], JobState.SUCCEEDED, metrics=metrics)
    return metrics


def _run_stages(sources: ModelSources, db: sqlite_utils.Database, blobs: BlobStore, job: dict[str, Any],
                job_dir: Path, telemetry: JobTelemetry) -> dict[str, Any]:
    config = AdaptConfig(**job["config"]["adapt"])
    with telemetry.stage("validate"):
        if job["dataset_id"] is None:
            raise InvalidInput("the job's dataset was deleted; upload it again and submit a new job")
        task = load_task(db, blobs, job["dataset_id"])
        loaded = load_model(job["model"], len(task.classes), seed=config.seed, sources=sources,
                            **job["config"]["model_options"])
    result = adapt(loaded.model, loaded.preprocess, task, config, on_progress=telemetry, workdir=job_dir)
    # this run's epochs: epochs_run also counts those of the runs a restart interrupted
    telemetry.set_items("train", result.metrics["train_samples"] * len(result.history))
    with telemetry.stage("export"):
        paths = write_outputs(result, job_dir / "outputs", config, base_model=job["model"])
        for key, path in paths.items():
            records.add_artifact(db, blobs, job["id"], ARTIFACT_NAMES[key], path)
    val = validation_split(task, loaded.preprocess, config)
    compiled, compile_metrics = None, None
    if job["config"]["compile"] != "none":
        with telemetry.stage("compile"):
            compiled, compile_metrics = _compile(db, blobs, job["id"], result, val, job["config"]["compile"],
                                                 job_dir / "compiled", config.batch_size)
    with telemetry.stage("benchmark"):
        latency = benchmark_latency(result.model, compiled, val.batch(config.batch_size),
                                    torch.device(result.metrics["device"]), telemetry.source)
    with telemetry.stage("record"):
        metrics = _job_metrics(result, config, compile_metrics, latency, loaded.info.options)
    seconds = dict(telemetry.reporter.stage_seconds)  # the pipeline's own stages, in the order they ran
    metrics["stage_seconds"] = {"validate": seconds.pop("validate"), **result.metrics["stage_seconds"], **seconds}
    return metrics


def _compile(db: sqlite_utils.Database, blobs: BlobStore, job_id: str, result: AdaptResult, val: ValidationSplit,
             backend: str, out_dir: Path, batch_size: int) -> tuple[CompiledModel, dict[str, Any]]:
    shutil.rmtree(out_dir, ignore_errors=True)  # a resumed job compiles afresh, leaving no stale files
    compiled, metrics = compile_merged(result.model, val, backend, out_dir, batch_size)
    metrics["artifacts"] = store_compiled_artifacts(db, blobs, job_id, out_dir)
    return compiled, metrics


def _job_metrics(result: AdaptResult, config: AdaptConfig, compile_metrics: Optional[dict[str, Any]],
                 latency: dict[str, Any], model_options: dict[str, Any]) -> dict[str, Any]:
    """jobs.metrics: adapt()'s metrics, the 2:4 and compile results, latency in the dashboard's shape."""
    metrics = {**result.metrics, **latency, "model_options": model_options}
    if config.sparsity == "2:4":
        metrics["accuracy_2_4_adapted"] = result.metrics["accuracy_after"]
    if compile_metrics is not None:
        metrics["compile"] = compile_metrics
        metrics["accuracy_compiled"] = compile_metrics["accuracy"]
        metrics["compiled_max_abs_logit_diff"] = compile_metrics["max_abs_logit_diff"]
    return metrics

"""One job, in the worker process: validate -> adapt (calibrate, score, mask, train, evaluate) -> export
-> [compile] -> record.

Stage outputs live in the job's work directory (calibration, mask, training checkpoints: see
`edged.adapt.stage_cache` and `edged.train.checkpoint`), so running the pipeline again on the same
directory resumes after the last finished stage and epoch instead of starting over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlite_utils

from edged.adapt.config import AdaptConfig
from edged.adapt.run import adapt, write_outputs
from edged.errors import InvalidInput
from edged.jobs import records
from edged.jobs.progress import ProgressReporter
from edged.models.registry import load_model
from edged.store.blobs import BlobStore
from edged.store.datasets import load_task

ARTIFACT_NAMES = {"delta": "delta.safetensors", "merged": "merged.safetensors"}


def run_pipeline(db: sqlite_utils.Database, blobs: BlobStore, job: dict[str, Any], job_dir: Path,
                 reporter: ProgressReporter) -> dict[str, Any]:
    """Run `job` to the end and record it as succeeded; returns its metrics. Raises on failure or stop."""
    config = AdaptConfig(**job["config"]["adapt"])
    with reporter.stage("validate"):
        if job["dataset_id"] is None:
            raise InvalidInput("the job's dataset was deleted; upload it again and submit a new job")
        task = load_task(db, blobs, job["dataset_id"])
        loaded = load_model(job["model"], len(task.classes), seed=config.seed, **job["config"]["model_options"])
    result = adapt(loaded.model, loaded.preprocess, task, config, on_progress=reporter, workdir=job_dir)
    with reporter.stage("export"):
        paths = write_outputs(result, job_dir / "outputs", config, base_model=job["model"])
        for key, path in paths.items():
            records.add_artifact(db, blobs, job["id"], ARTIFACT_NAMES[key], path)
    # --- compile stage: plugs in here -------------------------------------------------------------
    # The 2:4 / compile stage goes here, inside `with reporter.stage("compile"):`. It takes
    # paths["merged"] (dense, zeros where pruned), job["config"]["compile"] ('none' skips it) and
    # config.sparsity; it stores its engine/program with records.add_artifact and returns metrics
    # (backend, latency) to merge into `metrics` below.
    # ------------------------------------------------------------------------------------------------
    with reporter.stage("record"):
        metrics = {**result.metrics, "model_options": loaded.info.options}
    own = dict(reporter.stage_seconds)  # validate, export, record: in the order the stages ran
    metrics["stage_seconds"] = {"validate": own.pop("validate"), **result.metrics["stage_seconds"], **own}
    records.finish_running(db, job["id"], records.SUCCEEDED, metrics=metrics)
    return metrics

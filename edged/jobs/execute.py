"""One job's pipeline in the worker, wired to the store: its config read back typed from its row, its dataset
and artifacts through the blob store, its progress into `job_events`, and each stage's time, energy and
peak memory into `job_stage_telemetry` as the stage ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import sqlite_utils
import torch
from torch import Tensor

from edged.data.task import TaskData
from edged.errors import EdgedError, InvalidInput
from edged.jobs import records
from edged.jobs.progress import ProgressReporter
from edged.jobs.states import JobState
from edged.models.sources import ModelSources
from edged.pipeline.config import JobConfig
from edged.pipeline.job import run_job
from edged.pipeline.job_stages import ARTIFACT_NAMES
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.datasets import get_dataset, load_task
from edged.sparse.blocks import blocks_of, union_blocks
from edged.tasks import patterns
from edged.tasks import records as tasks
from edged.tasks.delta import parse_delta
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.reading import PowerSource
from edged.telemetry.sources import open_named_source, open_power_source
from edged.telemetry.stages import stage_recorder

log = logging.getLogger(__name__)


def execute_job(settings: Settings, db: sqlite_utils.Database, blobs: BlobStore, job: dict[str, Any],
                job_dir: Path, reporter: ProgressReporter) -> dict[str, Any]:
    """Run `job` to the end and record it as succeeded; returns its metrics. Raises on failure or stop."""
    job_id, dataset_id = job["id"], job["dataset_id"]

    def task() -> TaskData:
        if dataset_id is None:
            raise InvalidInput("the job's dataset was deleted; upload it again and submit a new job")
        return load_task(db, blobs, dataset_id)

    def test_task() -> Optional[TaskData]:
        """The held-out test set as uploaded (None without one); the validate stage relabels it."""
        test_id = job["config"].get("test_dataset")
        return None if test_id is None else load_task(db, blobs, test_id)

    def store_artifact(name: str, path: Path, media_type: str) -> None:
        records.add_artifact(db, blobs, job_id, name, path, media_type)

    source = open_job_power_source(settings)

    try:
        config = JobConfig.model_validate(job["config"])
        metrics = run_job(config, job["model"], job_dir,
                          ModelSources.from_settings(settings), task, store_artifact, reporter, source,
                          stage_recorder(db, job_id, source.name), lambda shapes: blocks_in_use(db, blobs, job, shapes),
                          lambda: shared_pattern(db, blobs, job), test_task)
    finally:
        source.close()
    if config.publish:
        metrics["task_id"] = publish_job_task(db, records.get_job(db, job_id), metrics)
    records.finish_running(db, job_id, JobState.SUCCEEDED, metrics=metrics)
    return metrics


def blocks_in_use(db: sqlite_utils.Database, blobs: BlobStore, job: dict[str, Any],
                  shapes: dict[str, torch.Size]) -> dict[str, Tensor]:
    """Layer -> the blocks the published tasks on this job's base (same model, options, seed and sparsity) use."""
    config = job["config"]
    used = []
    for task in tasks.tasks_on_base(db, job["model"], config["model_options"], config["adapt"]["seed"],
                                    config["adapt"]["sparsity"]):
        with blobs.open(task["delta_blob"]) as stored:
            delta = parse_delta(stored.read(), f"the delta of task {task['id']}")
        used.append({name: blocks_of(shapes[name], indices) for name, (indices, _) in delta.sparse.items()
                     if name in shapes})
    return union_blocks(used)


def shared_pattern(db: sqlite_utils.Database, blobs: BlobStore, job: dict[str, Any]) -> Optional[dict[str, Tensor]]:
    """The 2:4 pattern the tasks on this job's base share (weight -> bool keep-mask), or None if it has none."""
    config = job["config"]
    found = patterns.load_base_pattern(db, blobs, job["model"], config["model_options"], config["adapt"]["seed"])
    return None if found is None else found[1]


def publish_job_task(db: sqlite_utils.Database, job: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The job's task: its delta artifact (the blob it shares), its dataset's classes and kind, and the compiled
    artifact when the job compiled one (`metrics.compile`). Published before the job is marked succeeded, keyed by
    the job, so a restart in between publishes the same task again. The first 2:4 task that shares (`share_2_4`)
    on a base gives the base its pattern."""
    artifacts = {a["name"]: a for a in records.list_artifacts(db, job["id"])}
    delta, compile_metrics = artifacts[ARTIFACT_NAMES["delta"]], metrics.get("compile")
    compiled = None
    if compile_metrics is not None and compile_metrics["artifact"] in artifacts:
        compiled = {"backend": compile_metrics["backend"], "artifact": compile_metrics["artifact"],
                    "blob": artifacts[compile_metrics["artifact"]]["blob"]}
    dataset = get_dataset(db, job["dataset_id"])
    features = dataset["shape"][0] if dataset["kind"] == "tabular" else None  # shape of one sample: [F]
    task_id = tasks.publish_task(db, job, dataset["classes"], dataset["kind"], delta["blob"], delta["size_bytes"],
                                 compiled, features)
    config, pattern = job["config"], artifacts.get(ARTIFACT_NAMES["pattern"])
    if pattern is not None and config["adapt"].get("share_2_4", True):
        layers = len(metrics.get("sparsity", {}).get("pruned_layers", []))
        patterns.set_base_pattern(db, job["model"], config["model_options"], config["adapt"]["seed"],
                                  pattern["blob"], layers, pattern["size_bytes"], task_id)
    return task_id


def open_job_power_source(settings: Settings) -> PowerSource:
    """The power source the daemon's settings name, else `none`.

    A source that cannot open costs the job its energy numbers (null), never the job itself.
    """
    try:
        return open_power_source(TelemetryConfig.from_settings(settings))
    except EdgedError as exc:
        log.warning("no power source for this job's stages (%s); energy is recorded as null", exc.message)
        return open_named_source("none", TelemetryConfig())

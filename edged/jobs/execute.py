"""One job's pipeline in the worker, wired to the store: its config read back typed from its row, its dataset
and artifacts through the blob store, its progress into `job_events`, and each stage's time, energy and
peak memory into `job_stage_telemetry` as the stage ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlite_utils

from edged.data.task import TaskData
from edged.errors import EdgedError, InvalidInput
from edged.jobs import records
from edged.jobs.progress import ProgressReporter
from edged.jobs.states import JobState
from edged.models.sources import ModelSources
from edged.pipeline.config import JobConfig
from edged.pipeline.job import run_job
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.datasets import load_task
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

    def store_artifact(name: str, path: Path, media_type: str) -> None:
        records.add_artifact(db, blobs, job_id, name, path, media_type)

    source = open_job_power_source(settings)

    try:
        metrics = run_job(JobConfig.model_validate(job["config"]), job["model"], job_dir,
                          ModelSources.from_settings(settings), task, store_artifact, reporter, source,
                          stage_recorder(db, job_id, source.name))
    finally:
        source.close()
    records.finish_running(db, job_id, JobState.SUCCEEDED, metrics=metrics)
    return metrics


def open_job_power_source(settings: Settings) -> PowerSource:
    """The power source the daemon's settings name, else `none`.

    A source that cannot open costs the job its energy numbers (null), never the job itself.
    """
    try:
        return open_power_source(TelemetryConfig.from_settings(settings))
    except EdgedError as exc:
        log.warning("no power source for this job's stages (%s); energy is recorded as null", exc.message)
        return open_named_source("none", TelemetryConfig())

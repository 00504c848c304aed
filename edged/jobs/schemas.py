"""Request and response bodies of /v1/jobs (the field names are the public contract).

A job request is the job fields of the adaptation config (`edged.pipeline.config.JobFields`: defaults,
bounds, descriptions and the method / 2:4 checks defined once there), the model's options, and what only
a request names: the model, the dataset and the compile backend.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from edged.jobs.states import FINAL_STATES, JobState
from edged.pipeline.config import JobFields, ModelOptions


class JobCreate(JobFields, ModelOptions):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a registered model (GET /v1/models), a transformers directory, "
                       "or 'package.module:factory[=weights.safetensors]'")
    dataset: str = Field(description="id of an uploaded dataset (POST /v1/datasets)")
    test_dataset: Optional[str] = Field(
        None, description="id of a second uploaded dataset held out as a fixed test set: the job reports accuracy "
        "on it before and after adaptation (metrics.test_accuracy_before/after) and never trains, selects or stops "
        "early on it. Same kind as `dataset`, its classes among the dataset's (matched by name), not the dataset "
        "itself")
    compile: str = Field("none", description="compile backend for the adapted model ('auto', a backend name) or 'none'")
    publish: bool = Field(True, description="publish the adapted model as a task to predict with (GET /v1/tasks) "
                          "when the job succeeds")


class JobPublic(BaseModel):
    id: str = Field(description="job id")
    state: JobState = Field(description=f"queued, then running, then one of the final states: {', '.join(FINAL_STATES)}")
    stage: Optional[str] = Field(description="the pipeline stage the job is in (or ended in)")
    progress: float = Field(ge=0.0, le=1.0, description="0..1")
    error: Optional[str] = Field(description="why the job failed, was cancelled or interrupted; null otherwise")
    metrics: dict[str, Any] = Field(description="accuracy_before/after, trainable_params/fraction, "
                                    "peak_memory_mb, stage_seconds, ... (filled when the job succeeds)")
    model: str = Field(description="the model spec adapted")
    dataset: Optional[str] = Field(description="dataset id (null once a finished job's dataset is deleted)")
    method: str = Field(description="adaptation method")
    config: dict[str, Any] = Field(description="the resolved settings the job runs with")
    cancel_requested: bool = Field(description="whether a cancel was asked for and not yet acted on")
    created_at: str = Field(description="submission time, ISO 8601 UTC")
    started_at: Optional[str] = Field(description="when a worker first took the job")
    finished_at: Optional[str] = Field(description="when the job reached a final state")


class ArtifactPublic(BaseModel):
    name: str = Field(description="file name, e.g. delta.safetensors, merged.safetensors")
    sha256: str = Field(description="SHA-256 of the file")
    size_bytes: int = Field(description="size in bytes")
    media_type: str = Field(description="MIME type")
    created_at: str = Field(description="when the job stored it, ISO 8601 UTC")

"""Request and response bodies of /v1/jobs (the field names are the public contract).

Training fields reuse AdaptConfig's own fields (defaults, bounds, descriptions): one source of truth.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from edged.adapt.config import AdaptConfig
from edged.jobs.states import FINAL_STATES, JobState


def _adapt_field(name: str) -> Any:
    """AdaptConfig's own field (default, bounds, description), typed Any so the annotation stays readable."""
    return AdaptConfig.model_fields[name]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a registered model (GET /v1/models), a transformers directory, "
                       "or 'package.module:factory[=weights.safetensors]'")
    dataset: str = Field(description="id of an uploaded dataset (POST /v1/datasets)")
    method: str = Field(_adapt_field("method").default, description="a registered adaptation method or baseline")
    budget: float = _adapt_field("budget")
    epochs: int = _adapt_field("epochs")
    lr: Optional[float] = _adapt_field("lr")
    batch_size: int = _adapt_field("batch_size")
    memory_budget_mb: Optional[float] = Field(
        None, gt=0.0, description="peak memory allowed for calibration, in MiB (default: EDGED_DEFAULT_MEMORY_BUDGET_MB)"
    )
    sparsity: Literal["none", "2:4"] = _adapt_field("sparsity")
    dense_reference: bool = _adapt_field("dense_reference")
    distill_weight: float = _adapt_field("distill_weight")
    compile: str = Field("none", description="compile backend for the adapted model ('auto', a backend name) or 'none'")
    seed: int = _adapt_field("seed")
    image_size: Optional[int] = Field(None, description="input resolution of an image model (default: the model's)")
    max_length: Optional[int] = Field(None, description="token limit of a text model (default: the model's)")


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

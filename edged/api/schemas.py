"""Response and request bodies of the API (the field names are the public contract)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field


class DatasetPublic(BaseModel):
    id: str = Field(description="dataset id, used as `dataset` when starting a job")
    name: str = Field(description="the name given at upload, else the uploaded file's name")
    sha256: str = Field(description="SHA-256 of the uploaded bytes; the same bytes give the same dataset")
    kind: Literal["image", "text", "tabular"] = Field(description="what the samples are")
    format: str = Field(description="upload format: npz, jsonl, csv, zip or tar")
    num_samples: int = Field(description="number of labelled samples")
    classes: list[str] = Field(description="class names; label i is classes[i]")
    shape: Optional[list[int]] = Field(description="shape of one sample: [C, H, W] images, [F] tabular, null text")
    size_bytes: int = Field(description="size of the uploaded file in bytes")
    created_at: str = Field(description="upload time, ISO 8601 UTC")
    already_stored: bool = Field(False, description="on upload: true when these exact bytes were uploaded before; "
                                 "the existing dataset is returned under the name it was first given, and nothing "
                                 "new is stored")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="'ok' when the API and its database answer")
    version: str = Field(description="edged version")
    schema_version: int = Field(description="database schema version (number of migrations applied)")


class ErrorContent(BaseModel):
    code: str = Field(description="stable machine-readable error code, e.g. invalid_input, not_found")
    message: str = Field(description="what went wrong and what would be accepted, for people")
    detail: object = Field(None, description="structured detail (e.g. every validation reason), or null")


class ErrorBody(BaseModel):
    error: ErrorContent


class TaskPublic(BaseModel):
    id: str = Field(description="task id, used in /v1/tasks/{id}/predict")
    job_id: Optional[str] = Field(description="the job that adapted it (null once that job is deleted)")
    base_model: str = Field(description="the base model spec its delta applies to")
    kind: Literal["image", "text", "tabular"] = Field(description="what inputs it takes")
    model_options: dict[str, object] = Field(
        description="the base's loader options (image_size, max_length, kind, drop_weight_keys)")
    seed: int = Field(description="the base's seed (a user factory's initialisation)")
    method: str = Field(description="the adaptation method")
    sparsity: Literal["none", "2:4"] = Field(description="whether its base weights were pruned to 2:4")
    classes: list[str] = Field(description="class names; logit i is classes[i]")
    delta_blob: str = Field(description="SHA-256 of its delta (the job's delta.safetensors)")
    delta_bytes: int = Field(description="size of the delta file in bytes")
    features: Optional[int] = Field(None, description="features per sample of a tabular task (null for others)")
    created_at: str = Field(description="when it was published, ISO 8601 UTC")
    compiled_backend: Optional[str] = Field(None, description="the compile backend its job ran (null: none)")
    compiled_artifact: Optional[str] = Field(None, description="the compiled artifact's name, e.g. model.onnx")
    compiled_blob: Optional[str] = Field(None, description="SHA-256 of the compiled artifact (the job's artifact)")
    serving_backend: Literal["eager", "onnxruntime", "tensorrt"] = Field(
        "eager", description="what answers its predictions here: its compiled artifact, or the resident base (eager)")
    serving_backend_reason: Optional[str] = Field(
        None, description="why the resident base answers although its job compiled an artifact (null otherwise)")


class ClassProbability(BaseModel):
    class_: str = Field(alias="class", description="class name")
    index: int = Field(description="class index (logit position)")
    probability: float = Field(description="softmax probability")


class PredictResponse(BaseModel):
    task: str = Field(description="the task id")
    predictions: list[list[ClassProbability]] = Field(description="per sample, its top-k classes, most likely first")
    latency_ms: float = Field(description="from the request's arrival at the task server to its answer")
    switch_ms: float = Field(description="time the task switch before this micro-batch took (0: already active)")
    batch_requests: int = Field(description="requests that shared this micro-batch")
    backend: Literal["eager", "onnxruntime", "tensorrt"] = Field(
        description="what answered: the task's compiled artifact, or the resident base with its delta (eager)")
    backend_reason: Optional[str] = Field(
        None, description="why eager answered although the task's job compiled an artifact (null otherwise)")
    energy_j: Optional[float] = Field(None, description="this request's share (by samples) of the joules the power "
                                      "source measured over its micro-batch's forward; null without a power source")
    logits: Optional[list[list[float]]] = Field(None, description="raw logits per sample, with ?logits=true")

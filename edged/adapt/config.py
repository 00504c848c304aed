"""Settings of one adaptation run: one pydantic model for validation, docs and the HTTP API."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AdaptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field("taskedge", description="a registered method (GET /v1/models lists models; see README for methods)")
    budget: float = Field(
        0.001, gt=0.0, le=1.0,
        description="trainable entries as a fraction of the backbone's Linear/Conv2d weights (0.001 = 0.1 %)",
    )
    k: Optional[int] = Field(None, ge=1, description="entries per output row instead of a budget (per_neuron only)")
    allocation: Literal["per_neuron", "global"] = Field("per_neuron", description="how the budget is spread")
    nm: Optional[str] = Field(None, description="N:M limit on the trainable mask, e.g. '2:4'")
    lora_rank: int = Field(8, ge=1, le=256, description="rank for lora / taskedge_lora / taso_lora")
    epochs: int = Field(3, ge=1, le=1000, description="training epochs")
    lr: Optional[float] = Field(None, gt=0.0, le=1.0, description="learning rate of the backbone part (default: the method's)")
    head_lr: float = Field(1e-3, gt=0.0, le=1.0, description="learning rate of the classification head")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay")
    batch_size: int = Field(32, ge=1, le=4096, description="training batch size")
    schedule: Literal["cosine", "onecycle"] = Field("cosine", description="warm-up + cosine, or one-cycle")
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps spent warming up")
    patience: int = Field(3, ge=1, description="epochs without validation improvement before stopping early")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of the data held out for validation")
    memory_budget_mb: Optional[float] = Field(
        None, gt=0.0, description="peak memory allowed for the calibration pass above the loaded model"
    )
    calibration_samples: int = Field(512, ge=1, description="training samples used for calibration/scoring")
    sparsity: Literal["none", "2:4"] = Field("none", description="prune to 2:4 before training")
    dense_reference: bool = Field(
        True, description="with sparsity '2:4': first adapt the unpruned model the same way, so the metrics show "
        "what 2:4 costs (accuracy_dense_adapted); doubles the training time",
    )
    distill_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="with sparsity '2:4' and the dense reference: share of the recovery loss "
        "spent on matching the dense reference's outputs (knowledge distillation; 0 = labels only)",
    )
    seed: int = Field(0, ge=0, description="seed for the split, the head, shuffling and random scores")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda[:i]'")
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported, else fp16)")

    @field_validator("nm")
    @classmethod
    def _check_nm(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        parts = value.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]):
            raise ValueError(f"nm must look like 'N:M' with 1 <= N <= M, got {value!r}")
        return value

    def nm_pair(self) -> Optional[tuple[int, int]]:
        if self.nm is None:
            return None
        n, m = self.nm.split(":")
        return int(n), int(m)

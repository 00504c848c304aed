"""Each method's own options, declared with the method when it registers (the PEFT pattern).

A method reads only its options class; the job's config (`edged.pipeline.config.AdaptConfig`) is composed
from these classes, so a field and its bounds and description are written once, here, and a method never
imports the pipeline's config. Extra fields are ignored: a method is handed the job's whole config and
keeps what its class names.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


class MethodOptions(BaseModel):
    """What every method may read: the seed and the trainable budget."""

    model_config = ConfigDict(extra="ignore")

    budget: float = Field(
        0.001, gt=0.0, le=1.0,
        description="trainable entries as a fraction of the backbone's Linear/Conv2d weights (0.001 = 0.1 %)",
    )
    seed: int = Field(0, ge=0, description="seed for the split, the head, shuffling and random scores")


class MaskOptions(MethodOptions):
    """How importance scores become the trainable mask (every sparse method, and masked LoRA)."""

    k: Optional[int] = Field(None, ge=1, description="entries per output row instead of a budget (per_neuron only)")
    allocation: Literal["per_neuron", "neuron_mass", "global", "layer_mass"] = Field(
        "neuron_mass", description="how the budget is spread: 'per_neuron' (every output row gets its top entries, "
        "layers share what is left in proportion to their rows), 'neuron_mass' (the same, but layers share in "
        "proportion to their score mass, as TR-PTS's layers do), 'global' (the best entries over all layers), "
        "'layer_mass' (TR-PTS: layers share the budget in proportion to their score mass, the Fisher mass with "
        "method 'fisher', then each layer keeps its best entries)",
    )
    nm: Optional[str] = Field(None, description="N:M limit on the trainable mask, e.g. '2:4'")

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


DEFAULT_LORA_RANK = 8  # lora's and taskedge_lora's rank when the config leaves it null (taso_lora has its own)


class LowRankOptions(MethodOptions):
    """Rank of the low-rank update (LoRA and its masked / TASO variants)."""

    lora_rank: Optional[int] = Field(
        None, ge=1, le=256, description="rank for lora / taskedge_lora / taso_lora; null: the method's own default "
        "(8 for lora and taskedge_lora, 1 for taso_lora)")

    def rank(self, default: int = DEFAULT_LORA_RANK) -> int:
        """The rank asked for, else the method's `default`."""
        return self.lora_rank if self.lora_rank is not None else default


class MaskedLowRankOptions(MaskOptions, LowRankOptions):
    """Masked LoRA: a mask chosen like a sparse method's, and a rank."""

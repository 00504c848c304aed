"""LoRA from Hugging Face PEFT on every Linear and (ungrouped) Conv2d of the backbone: the usual baseline."""

from __future__ import annotations

from typing import Optional

from torch import nn

from edged.calibrate import CalibrationResult
from edged.methods.base import Adaptation, TaskBatches, backbone_layers, freeze_
from edged.methods.options import LowRankOptions
from edged.methods.registry import register_adapter


@register_adapter("lora", "LoRA (Hugging Face PEFT) on all Linear/Conv2d layers of the backbone, rank lora_rank",
                  options=LowRankOptions)
def prepare(model: nn.Module, batches: TaskBatches, options: LowRankOptions,
            calibration: Optional[CalibrationResult]) -> Adaptation:
    from peft import LoraConfig, inject_adapter_in_model

    freeze_(model)
    backbone = getattr(model, "backbone", model)
    prefix = "backbone." if backbone is not model else ""
    layers = backbone_layers(model)
    targets = [
        name[len(prefix) : -len(".weight")]
        for name, layer in layers.items()
        if not (isinstance(layer, nn.Conv2d) and layer.groups > 1)
    ]
    rank = options.rank()
    lora_config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets)
    inject_adapter_in_model(lora_config, backbone)
    params = [p for name, p in backbone.named_parameters() if "lora_" in name]
    for p in params:
        p.requires_grad_(True)
    return Adaptation(
        method="lora",
        parameters=params,
        entries=sum(p.numel() for p in params),
        changed={f"{prefix}{t}.weight": None for t in targets},
        merge_=lambda: _merge_and_unload_(backbone),
        info={"target_layers": len(targets)},
    )


def _merge_and_unload_(backbone: nn.Module) -> None:
    """Fold each PEFT LoRA layer into its base layer and put the plain base layer back in its place."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, m) for name, m in backbone.named_modules() if isinstance(m, LoraLayer)]
    for name, module in wrapped:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, child, module.get_base_layer())

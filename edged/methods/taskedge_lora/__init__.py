"""TaskEdge + LoRA: W = W0 + (B A) * M, M the TaskEdge per-neuron mask (arXiv 2504.03718, sec. masked LoRA)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from edged.calibrate import CalibrationResult
from edged.methods.base import Adaptation, ScoreConfig, TaskBatches, backbone_layers, freeze_, lowrank_adaptation
from edged.methods.options import MaskedLowRankOptions
from edged.methods.registry import register_adapter
from edged.methods.sparse_delta import select_mask
from edged.methods.taskedge import score as taskedge_score
from edged.sparse.lowrank import LowRankDelta, attach_lowrank_


@register_adapter("taskedge_lora", "masked LoRA: (B A) * TaskEdge mask, rank lora_rank",
                  options=MaskedLowRankOptions, needs_calibration=True)
def prepare(model: nn.Module, batches: TaskBatches, options: MaskedLowRankOptions,
            calibration: Optional[CalibrationResult]) -> Adaptation:
    scores = taskedge_score(model, batches, ScoreConfig(seed=options.seed, calibration=calibration))
    masks = select_mask(model, scores, options)
    freeze_(model)
    generator = torch.Generator().manual_seed(options.seed)
    layers = backbone_layers(model)
    deltas = {}
    for name, mask in masks.items():
        if bool(mask.any()):
            deltas[name] = LowRankDelta(layers[name].weight, options.rank(), mask=mask, generator=generator)
            attach_lowrank_(layers[name], deltas[name])
    return lowrank_adaptation("taskedge_lora", model, deltas, mask_entries=int(sum(int(m.sum()) for m in masks.values())))

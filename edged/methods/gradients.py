"""Per-batch weight gradients of the task loss, shared by the gradient-based scorers (fisher, taso)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.methods.base import TaskBatches, backbone_layers


def weight_gradients(model: nn.Module, batches: TaskBatches) -> Iterator[dict[str, Tensor]]:
    """For each batch, d(mean cross-entropy)/dW of every backbone Linear/Conv2d weight (float32, detached).

    Runs in eval mode (BatchNorm statistics untouched); restores requires_grad flags afterwards.
    """
    layers = backbone_layers(model)
    weights = {name: layer.weight for name, layer in layers.items()}
    flags = {name: w.requires_grad for name, w in weights.items()}
    model.eval()
    try:
        for w in weights.values():
            w.requires_grad_(True)
        for x, y in batches:
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(weights.values()))
            yield {name: g.detach().float() for name, g in zip(weights, grads)}
    finally:
        for name, w in weights.items():
            w.requires_grad_(flags[name])

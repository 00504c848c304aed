"""Accuracy and logits of a classifier on held-out data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edged.data.task import Inputs, batches, num_samples, take, to_device


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Inputs, labels: Tensor, batch_size: int, device: torch.device, amp_dtype=None) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in batches(inputs, labels, batch_size):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(to_device(x, device))
        correct += int((logits.argmax(-1).cpu() == y).sum())
    model.train(was_training)
    return correct / max(int(labels.shape[0]), 1)


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: Inputs, batch_size: int, device: torch.device, amp_dtype=None) -> Tensor:
    """(N, classes) float32 logits on the CPU, in the order of `inputs`."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, num_samples(inputs), batch_size):
        x = take(inputs, slice(start, start + batch_size))
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out.append(model(to_device(x, device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)

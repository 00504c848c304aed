"""Accuracy and logits of a classifier on held-out data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edged.data.task import Inputs, num_samples, take, to_device


def accuracy(model: nn.Module, inputs: Inputs, labels: Tensor, batch_size: int, device: torch.device, amp_dtype=None) -> float:
    if int(labels.shape[0]) == 0:
        return 0.0
    logits = predict_logits(model, inputs, batch_size, device, amp_dtype)  # (N, classes)
    return int((logits.argmax(-1) == labels.cpu()).sum()) / int(labels.shape[0])


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

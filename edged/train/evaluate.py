"""The one evaluation loop: logits and accuracy of a classifier (a PyTorch model or a compiled one) on
held-out data."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from edged.data.task import Inputs, num_samples, take, to_device


@torch.no_grad()
def batched_logits(predict: Callable[[Inputs], Tensor], inputs: Inputs, batch_size: int) -> Tensor:
    """(N, classes) float32 CPU logits of `predict` over `inputs`, in batches of `batch_size`, in order."""
    return torch.cat([predict(take(inputs, slice(start, start + batch_size))).float().cpu()
                      for start in range(0, num_samples(inputs), batch_size)])


def accuracy_of(logits: Tensor, labels: Tensor) -> float:
    """Share of rows of (N, classes) `logits` whose argmax is the label; 0.0 for no samples."""
    if int(labels.shape[0]) == 0:
        return 0.0
    return int((logits.argmax(-1) == labels.cpu()).sum()) / int(labels.shape[0])


def predict_logits(model: nn.Module, inputs: Inputs, batch_size: int, device: torch.device,
                   amp_dtype: Optional[torch.dtype] = None) -> Tensor:
    """(N, classes) float32 logits on the CPU of `model` in eval mode on `device` (autocast to `amp_dtype`)."""
    was_training = model.training
    model.eval()

    def predict(x: Inputs) -> Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return model(to_device(x, device))

    try:
        return batched_logits(predict, inputs, batch_size)
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, inputs: Inputs, labels: Tensor, batch_size: int, device: torch.device,
             amp_dtype: Optional[torch.dtype] = None) -> float:
    if int(labels.shape[0]) == 0:
        return 0.0
    return accuracy_of(predict_logits(model, inputs, batch_size, device, amp_dtype), labels)

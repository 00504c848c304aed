"""Pruned tiny models (from `tiny_model`) with example inputs, for the exporters and the backends."""

import pytest
import torch
from torch import nn

from tiny_model import TinyCNN, TinyMLP, TinyText, pruned_2_4


def _pruned_weights(model: nn.Module, pruned: list[str]) -> dict[str, torch.Tensor]:
    weights = dict(model.named_parameters())
    return {name: weights[name].detach().clone() for name in pruned}


@pytest.fixture
def pruned_mlp():
    """(TinyMLP pruned to 2:4, its prune report, a (4, 8, 32) token batch)."""
    model, report = pruned_2_4(TinyMLP())
    return model, report, torch.randn(4, 8, 32)


@pytest.fixture
def cnn():
    """(TinyCNN pruned to 2:4, {weight name: pruned weight}, a batch of 3 images of 8 x 8)."""
    model, report = pruned_2_4(TinyCNN())
    return model, _pruned_weights(model, report.pruned), torch.randn(3, 3, 8, 8)


@pytest.fixture
def text():
    """(TinyText pruned to 2:4, {weight name: pruned weight}, token ids and a mask with padding)."""
    model, report = pruned_2_4(TinyText())
    ids = torch.randint(0, 64, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    return model, _pruned_weights(model, report.pruned), {"input_ids": ids, "attention_mask": mask}

"""A tiny real model for the adaptation-core tests (a module with a unique name, importable from any test)."""

import torch
from torch import nn

from edged.models.classifier import Classifier


def tiny_classifier(num_classes: int = 10, seed: int = 0):
    """A small CNN (layer sizes multiples of 16, so 2:4 applies) with a Linear head: pointwise, kxk and
    depthwise convs, BatchNorm and a Linear, i.e. every layer type the core handles."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),  # expects 16 x 16 inputs
    )
    return Classifier(backbone, 64, num_classes, "image", generator=torch.Generator().manual_seed(seed))

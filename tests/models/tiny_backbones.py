"""Tiny user backbones for the module:factory tests (imported by spec, e.g. `tiny_backbones:small_cnn`)."""

import torch
from torch import nn


def small_cnn() -> nn.Module:
    """(N, 3, S, S) -> (N, 32); D found by a probe forward."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 32),
    )


class DeclaredMLP(nn.Module):
    """Declares its feature size instead of being probed."""

    feature_dim = 24

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(8, 24), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def declared_mlp() -> nn.Module:
    return DeclaredMLP()


def tabular_mlp() -> nn.Module:
    """(N, 6) -> (N, 16); D and F found from the first Linear and a probe forward."""
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16))


def no_layers() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def not_a_module() -> int:
    return 3


def broken() -> nn.Module:
    raise RuntimeError("factory exploded")


def wrong_output() -> nn.Module:
    """Returns feature maps (N, C, H, W), not (N, D)."""
    return nn.Conv2d(3, 4, 3)

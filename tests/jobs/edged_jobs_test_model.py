"""A tiny user backbone for the job tests, loaded by the worker process through the spec
`edged_jobs_test_model:small_cnn` (its directory is put on PYTHONPATH by the tests)."""

import torch
from torch import nn


def small_cnn() -> nn.Module:
    """(N, 3, 16, 16) -> (N, 64): convs and a Linear with sizes in multiples of 16 (so 2:4 applies)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    )


def broken() -> nn.Module:
    """A factory that fails when the worker builds the model (validation cannot know without building it)."""
    raise RuntimeError("factory exploded")

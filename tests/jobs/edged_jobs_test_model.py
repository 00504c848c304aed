"""A tiny user backbone for the job tests, loaded by the worker process through the spec
`edged_jobs_test_model:small_cnn` (its directory is put on PYTHONPATH by the tests)."""

import os

import torch
from torch import nn

CALLS_FILE_VARIABLE = "TEST_FACTORY_CALLS_FILE"  # where counted_cnn appends a line per call (the daemon is another process)


def small_cnn() -> nn.Module:
    """(N, 3, 16, 16) -> (N, 64): convs and a Linear with sizes in multiples of 16 (so 2:4 applies)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    )


def counted_cnn() -> nn.Module:
    """small_cnn, each call appending the calling process's pid to the file named by CALLS_FILE_VARIABLE, so a
    test can count how often the daemon built it."""
    calls_file = os.environ.get(CALLS_FILE_VARIABLE)
    if calls_file:
        with open(calls_file, "a") as calls:
            calls.write(f"{os.getpid()}\n")
    return small_cnn()


def broken() -> nn.Module:
    """A factory that fails when it is built: POST /v1/jobs builds it, so this is a 422 at submit."""
    raise RuntimeError("factory exploded")


def same_shape_mlp() -> nn.Module:
    """(N, 3, 16, 16) -> (N, 192): six Linear(192, 192), so every trainable layer has ONE shape, and more
    than nine of them, so their names in sorted order (backbone.10, backbone.12, backbone.2, ...) differ from
    the model's order. Values restored into the wrong layer would fit without an error: resume tests use it
    to catch exactly that."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.AvgPool2d(2), nn.Flatten()]  # (N, 3, 8, 8) -> (N, 192)
    for _ in range(6):
        layers += [nn.Linear(192, 192), nn.ReLU()]
    return nn.Sequential(*layers)


def wine_mlp() -> nn.Module:
    """(N, 13) -> (N, 64): a tabular backbone for the 13 chemical measurements of mlxtend's wine data. The
    BatchNorm puts features of very different scales (proline ~1000, hue ~1) on one footing."""
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(13), nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())


def slow_bn_cnn() -> nn.Module:
    """small_cnn with BatchNorm momentum 0.01: a few hundred steps pass before its running statistics forget
    their initial mean 0 / variance 1, so a short full fine-tuning leaves them far from the task data's."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16, momentum=0.01), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32, momentum=0.01), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    )

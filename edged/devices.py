"""Which torch device a name means here: 'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'."""

from __future__ import annotations

from typing import Union

import torch

from edged.errors import InvalidInput, Unavailable

ACCEPTED = "auto, cpu, cuda, cuda:N"


def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """The device, or InvalidInput for a name torch does not know / edged does not run on, and
    Unavailable for CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {name!r}", detail={"accepted": ACCEPTED}) from exc
    if device.type not in ("cpu", "cuda"):
        raise InvalidInput(f"unsupported device {name!r}", detail={"accepted": ACCEPTED})
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Unavailable(f"device {name!r} requested but CUDA is not available on this machine",
                          detail={"accepted": ["auto", "cpu"]})
    return device

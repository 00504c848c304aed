"""Checkpoints of the trainable part only (a few thousand numbers for a sparse method), written atomically.

`last.safetensors` after every epoch (to resume), `best.safetensors` whenever validation improves
(what training returns). Metadata: epoch, val_accuracy, best_epoch, best_accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from safetensors.torch import load_file
from torch import Tensor

from edged.store.tensor_files import save_tensors_atomic


@dataclass
class Checkpoint:
    state: dict[str, Tensor]
    epoch: int
    val_accuracy: float
    best_epoch: int
    best_accuracy: float


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    meta = {"epoch": str(checkpoint.epoch), "val_accuracy": repr(checkpoint.val_accuracy),
            "best_epoch": str(checkpoint.best_epoch), "best_accuracy": repr(checkpoint.best_accuracy)}
    save_tensors_atomic(path, checkpoint.state, meta)


def load_checkpoint(path: Path) -> Optional[Checkpoint]:
    if not path.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    return Checkpoint(load_file(str(path)), int(meta["epoch"]), float(meta["val_accuracy"]),
                      int(meta["best_epoch"]), float(meta["best_accuracy"]))

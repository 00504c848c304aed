"""Checkpoints of the trainable part only (a few thousand numbers for a sparse method), written durably.

`last.safetensors` after every epoch (to resume), `best.safetensors` whenever validation improves
(what training returns). Tensors are keyed by the parameter's NAME in the model (`param/<name>`), never
by position: a method may list its tensors in another order on resume, and many layers share a shape, so
a positional checkpoint could load silently into the wrong matrices. `last` also holds the optimizer's
state (`optim/<key>/<name>`: AdamW's step and moments, sized like the trainable part) and the RNG
states (`rng/...`), so a resumed run continues exactly as an uninterrupted one. Metadata: epoch,
val_accuracy, best_epoch, best_accuracy.

A checkpoint whose names or shapes differ from the job's trainable tensors, or a torn file, reads as
absent: training starts over rather than loading numbers into the wrong place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from edged.store.tensor_files import load_tensors, save_tensors_atomic

log = logging.getLogger(__name__)
PARAM, OPTIM, RNG = "param/", "optim/", "rng/"


@dataclass
class Checkpoint:
    state: dict[str, Tensor]  # trainable tensors by parameter name
    epoch: int
    val_accuracy: float
    best_epoch: int
    best_accuracy: float
    optimizer: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # name -> AdamW state of that tensor
    rng: dict[str, Tensor] = field(default_factory=dict)  # "torch", "shuffle", "cuda" -> generator state


def optimizer_state(optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter]) -> dict[str, dict[str, Tensor]]:
    """The optimizer's per-tensor state (AdamW: step, exp_avg, exp_avg_sq) keyed by parameter name."""
    return {name: dict(optimizer.state[p]) for name, p in params.items() if optimizer.state.get(p)}


def load_optimizer_state_(optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter],
                          state: dict[str, dict[str, Tensor]]) -> None:
    for name, values in state.items():
        param = params[name]  # scalars (AdamW's step) stay on the CPU, where AdamW keeps them
        optimizer.state[param] = {k: v.to(param.device) if v.dim() else v.clone() for k, v in values.items()}


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    meta = {"epoch": str(checkpoint.epoch), "val_accuracy": repr(checkpoint.val_accuracy),
            "best_epoch": str(checkpoint.best_epoch), "best_accuracy": repr(checkpoint.best_accuracy)}
    tensors = {PARAM + name: value for name, value in checkpoint.state.items()}
    for name, values in checkpoint.optimizer.items():
        tensors.update({f"{OPTIM}{key}/{name}": value for key, value in values.items()})
    tensors.update({RNG + key: value for key, value in checkpoint.rng.items()})
    save_tensors_atomic(path, tensors, meta)


def load_checkpoint(path: Path, params: dict[str, nn.Parameter]) -> Optional[Checkpoint]:
    """The checkpoint at `path` if it holds exactly the tensors of `params` (same names, same shapes)."""
    stored = load_tensors(path)
    if stored is None:
        return None
    state = {k.removeprefix(PARAM): v for k, v in stored.tensors.items() if k.startswith(PARAM)}
    problem = _mismatch(state, params)
    if problem:
        log.warning("%s does not fit this job's trainable tensors (%s); training starts over", path, problem)
        return None
    optimizer: dict[str, dict[str, Tensor]] = {}
    for key, value in stored.tensors.items():
        if key.startswith(OPTIM):
            state_key, _, name = key.removeprefix(OPTIM).partition("/")
            optimizer.setdefault(name, {})[state_key] = value
    rng = {k.removeprefix(RNG): v for k, v in stored.tensors.items() if k.startswith(RNG)}
    meta = stored.metadata
    return Checkpoint(state, int(meta["epoch"]), float(meta["val_accuracy"]), int(meta["best_epoch"]),
                      float(meta["best_accuracy"]), optimizer, rng)


def _mismatch(state: dict[str, Tensor], params: dict[str, nn.Parameter]) -> Optional[str]:
    if set(state) != set(params):
        return f"missing {sorted(set(params) - set(state))[:3]}, unknown {sorted(set(state) - set(params))[:3]}"
    shapes = {name: (tuple(state[name].shape), tuple(p.shape)) for name, p in params.items()
              if state[name].shape != p.shape}
    return f"shapes (stored, expected) {dict(list(shapes.items())[:3])}" if shapes else None

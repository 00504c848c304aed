"""Stage outputs persisted in a job's work directory, so an interrupted adaptation resumes where it was.

calibration.safetensors: feature norms per layer, input ranges as `range:<layer>` (amax, percentile)
                         (+ micro-batch, samples, peak memory as metadata).
mask.safetensors:        the trainable mask per layer (uint8; bool is stored as 0/1).
dense_reference/result.safetensors: the dense reference's accuracy (metadata) and, when distilling,
                         its logits on the training samples.
lr_search.safetensors:   the automatic learning rates' search summary (metadata, JSON): a resumed job
                         trains on with the rates it chose, without searching again.
All go through edged.store.tensor_files: written durably, and a torn or damaged file reads as absent, so
its stage is redone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from edged.calibrate import CalibrationResult
from edged.store.tensor_files import load_tensors, save_tensors_atomic

log = logging.getLogger(__name__)
_RANGE = "range:"  # key prefix of a layer's input range in calibration.safetensors


def cached_calibration(workdir: Optional[Path], compute: Callable[[], CalibrationResult]) -> tuple[CalibrationResult, bool]:
    """(result, loaded_from_disk)."""
    path = workdir / "calibration.safetensors" if workdir else None
    stored = load_tensors(path) if path is not None else None
    if stored is not None:
        meta = stored.metadata
        peak = meta.get("peak_memory_mb")
        norms = {k: v for k, v in stored.tensors.items() if not k.startswith(_RANGE)}
        ranges = {k[len(_RANGE):]: v for k, v in stored.tensors.items() if k.startswith(_RANGE)}
        result = CalibrationResult(norms, int(meta["micro_batch"]), int(meta["samples"]),
                                   float(peak) if peak not in (None, "None") else None, float(meta["seconds"]),
                                   ranges=ranges)
        return result, True
    result = compute()
    if path is not None:
        tensors = result.norms | {f"{_RANGE}{name}": r for name, r in result.ranges.items()}
        save_tensors_atomic(path, tensors, {"micro_batch": str(result.micro_batch), "samples": str(result.samples),
                                   "peak_memory_mb": str(result.peak_memory_mb), "seconds": str(result.seconds)})
    return result, False


def load_masks(workdir: Optional[Path], weight_shapes: Mapping[str, torch.Size]) -> Optional[dict[str, Tensor]]:
    """The stored masks by layer name, or None. A stored mask is used only if every name is one of the
    model's layers (`weight_shapes`: name -> weight shape) with that shape; it comes back in the model's
    layer order, as the mask stage made it (the file itself keeps its names sorted)."""
    path = workdir / "mask.safetensors" if workdir else None
    stored = load_tensors(path) if path is not None else None
    if stored is None:
        return None
    mismatched = {name: tuple(mask.shape) for name, mask in stored.tensors.items()
                  if name not in weight_shapes or mask.shape != weight_shapes[name]}
    if mismatched:
        log.warning("%s does not fit this model (%s); the mask is chosen again", path, mismatched)
        return None
    return {name: stored.tensors[name].to(torch.bool) for name in weight_shapes if name in stored.tensors}


def save_masks(workdir: Optional[Path], masks: dict[str, Tensor]) -> None:
    if workdir is not None:
        save_tensors_atomic(workdir / "mask.safetensors", {k: v.to(torch.uint8) for k, v in masks.items()}, {})


def cached_dense_reference(
    directory: Optional[Path], compute: Callable[[], tuple[float, Optional[Tensor]]]
) -> tuple[float, Optional[Tensor]]:
    """(validation accuracy of the dense reference, its teacher logits or None), computed once."""
    path = directory / "result.safetensors" if directory else None
    stored = load_tensors(path) if path is not None else None
    if stored is not None:
        return float(stored.metadata["accuracy_after"]), stored.tensors.get("logits")
    accuracy, logits = compute()
    if path is not None:
        save_tensors_atomic(path, {} if logits is None else {"logits": logits}, {"accuracy_after": str(accuracy)})
    return accuracy, logits


def cached_search(workdir: Optional[Path], compute: Callable[[], dict]) -> tuple[dict, bool]:
    """The learning-rate search's summary (`edged.train.lr_search.SearchResult.summary`), computed once; and
    whether it was computed now (False: a resumed job's, from an earlier run)."""
    path = workdir / "lr_search.safetensors" if workdir else None
    stored = load_tensors(path) if path is not None else None
    if stored is not None:
        return dict(json.loads(stored.metadata["summary"])), False
    summary = compute()
    if path is not None:
        save_tensors_atomic(path, {}, {"summary": json.dumps(summary)})
    return summary, True

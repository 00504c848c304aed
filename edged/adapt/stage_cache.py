"""Stage outputs persisted in a job's work directory, so an interrupted adaptation resumes where it was.

calibration.safetensors: feature norms per layer (+ micro-batch, samples, peak memory as metadata).
mask.safetensors:        the trainable mask per layer (uint8; bool is stored as 0/1).
dense_reference/result.safetensors: the dense reference's accuracy (metadata) and, when distilling,
                         its logits on the training samples.
All are written atomically; a half-written file never exists under the final name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from edged.calibrate import CalibrationResult
from edged.store.tensor_files import save_tensors_atomic


def cached_calibration(workdir: Optional[Path], compute: Callable[[], CalibrationResult]) -> tuple[CalibrationResult, bool]:
    """(result, loaded_from_disk)."""
    path = workdir / "calibration.safetensors" if workdir else None
    if path is not None and path.exists():
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata()
        peak = meta.get("peak_memory_mb")
        result = CalibrationResult(load_file(str(path)), int(meta["micro_batch"]), int(meta["samples"]),
                                   float(peak) if peak not in (None, "None") else None, float(meta["seconds"]))
        return result, True
    result = compute()
    if path is not None:
        save_tensors_atomic(path, result.norms, {"micro_batch": str(result.micro_batch), "samples": str(result.samples),
                                   "peak_memory_mb": str(result.peak_memory_mb), "seconds": str(result.seconds)})
    return result, False


def cached_masks(workdir: Optional[Path], compute: Callable[[], dict[str, Tensor]]) -> tuple[dict[str, Tensor], bool]:
    path = workdir / "mask.safetensors" if workdir else None
    if path is not None and path.exists():
        return {k: v.to(torch.bool) for k, v in load_file(str(path)).items()}, True
    masks = compute()
    if path is not None:
        save_tensors_atomic(path, {k: v.to(torch.uint8) for k, v in masks.items()}, {})
    return masks, False


def cached_dense_reference(
    directory: Optional[Path], compute: Callable[[], tuple[float, Optional[Tensor]]]
) -> tuple[float, Optional[Tensor]]:
    """(validation accuracy of the dense reference, its teacher logits or None), computed once."""
    path = directory / "result.safetensors" if directory else None
    if path is not None and path.exists():
        with safe_open(str(path), "pt") as handle:
            accuracy = float(handle.metadata()["accuracy_after"])
        return accuracy, load_file(str(path)).get("logits")
    accuracy, logits = compute()
    if path is not None:
        save_tensors_atomic(path, {} if logits is None else {"logits": logits}, {"accuracy_after": str(accuracy)})
    return accuracy, logits

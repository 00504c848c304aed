"""The pipeline's compile stage: the merged model through a compile backend, its artifacts stored
with the job, and the compiled model's accuracy re-measured on the validation split.

The validation split is the one `adapt()` evaluated on (`task.split(val_fraction, seed)` is
deterministic), so `accuracy_compiled` and the job's `accuracy_after` count the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import sqlite_utils
import torch
from torch import Tensor, nn

from edged.adapt.config import AdaptConfig
from edged.compile.base import CompiledModel
from edged.compile.registry import compile_model
from edged.data.task import Inputs, TaskData, take
from edged.compile.inputs import call_model
from edged.jobs import records
from edged.store.blobs import BlobStore

MEDIA_TYPES = {".json": "application/json"}  # engines, ONNX files and .pt2 archives are opaque bytes


@dataclass
class ValidationSplit:
    inputs: Inputs  # model-ready: (N, ...) tensor or dict of (N, L) tensors
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, size: int) -> Inputs:
        """The first `size` samples (all of them when fewer): the example and benchmark batch."""
        return take(self.inputs, slice(0, min(size, len(self))))


def validation_split(task: TaskData, preprocess: Callable, config: AdaptConfig) -> ValidationSplit:
    """The held-out split `adapt()` measured accuracy_after on, preprocessed for the model."""
    _, val_task = task.split(config.val_fraction, config.seed)
    return ValidationSplit(preprocess(val_task), val_task.y)


@torch.no_grad()
def all_logits(predict: Callable[[Inputs], Tensor], val: ValidationSplit, batch_size: int) -> Tensor:
    """(N, classes) float32 CPU logits of `predict` over the split, in batches of `batch_size`."""
    parts = [predict(take(val.inputs, slice(i, i + batch_size))).float().cpu()
             for i in range(0, len(val), batch_size)]
    return torch.cat(parts)


def compile_merged(model: nn.Module, val: ValidationSplit, backend: str, out_dir: Path,
                   batch_size: int) -> tuple[CompiledModel, dict[str, Any]]:
    """Compile the merged model (moved to the CPU, as backends expect) and compare it with PyTorch.

    Returns the compiled model and the job's `compile` metrics: backend, artifact, accuracy of the
    compiled model and of PyTorch (float32, CPU) on the validation split, the agreement of their
    predictions, the largest |logit difference| and the backend's sparse/dense layer report.
    """
    model.cpu().eval()
    compiled = compile_model(model, val.batch(batch_size), backend, out_dir)
    reference = all_logits(lambda x: call_model(model, x), val, batch_size)  # (N, classes)
    got = all_logits(compiled.predict, val, batch_size)  # (N, classes)
    labels = val.labels
    metrics = {
        "backend": compiled.backend,
        "artifact": compiled.artifact.name,
        "accuracy": _accuracy(got, labels),
        "accuracy_pytorch_cpu": _accuracy(reference, labels),
        "prediction_agreement": float((got.argmax(1) == reference.argmax(1)).float().mean()),
        "max_abs_logit_diff": float((got - reference).abs().max()),
        "val_samples": len(val),
        "report": compiled.report.as_dict(),
    }
    return compiled, metrics


def store_compiled_artifacts(db: sqlite_utils.Database, blobs: BlobStore, job_id: str, out_dir: Path) -> list[str]:
    """Every file the backend wrote (engine / ONNX / .pt2, plans and reports) as a job artifact."""
    names = []
    for path in sorted(p for p in out_dir.iterdir() if p.is_file()):
        records.add_artifact(db, blobs, job_id, path.name, path,
                             MEDIA_TYPES.get(path.suffix, "application/octet-stream"))
        names.append(path.name)
    return names


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())

"""The compile stage's work: the merged model through a compile backend, and the compiled model's accuracy
and agreement with PyTorch re-measured on the job's validation split (the one `accuracy_after` counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from torch import Tensor, nn

from edged.compile.base import CompiledModel
from edged.compile.registry import compile_model
from edged.compile.inputs import call_model
from edged.pipeline.split import LabelledInputs
from edged.train.evaluate import accuracy_of, batched_logits

MEDIA_TYPES = {".json": "application/json"}  # engines, ONNX files and .pt2 archives are opaque bytes


def compile_merged(model: nn.Module, val: LabelledInputs, backend: str, out_dir: Path, batch_size: int,
                   int8_ranges: Optional[dict[str, Tensor]] = None,
                   on_phase: Optional[Callable[[int, int], None]] = None) -> tuple[CompiledModel, dict[str, Any]]:
    """Compile the merged model (moved to the CPU, as backends expect) and compare it with PyTorch.

    Returns the compiled model and the job's `compile` metrics: backend, artifact, accuracy of the
    compiled model and of PyTorch (float32, CPU) on the validation split, the agreement of their
    predictions, the largest |logit difference| and the backend's sparse/dense layer report. With
    `int8_ranges` the backend compiles INT8 (`accuracy` is then the INT8 model's). `on_phase(done, 3)` follows
    its three phases: the build, PyTorch's logits, the compiled model's.
    """
    phase = on_phase or (lambda done, total: None)
    model.cpu().eval()
    compiled = compile_model(model, val.batch(batch_size), backend, out_dir, int8_ranges)
    phase(1, 3)
    reference = batched_logits(lambda x: call_model(model, x), val.inputs, batch_size)  # (N, classes)
    phase(2, 3)
    got = batched_logits(compiled.predict, val.inputs, batch_size)  # (N, classes)
    phase(3, 3)
    labels = val.labels
    metrics = {
        "backend": compiled.backend,
        "artifact": compiled.artifact.name,
        "accuracy": accuracy_of(got, labels),
        "accuracy_pytorch_cpu": accuracy_of(reference, labels),
        "prediction_agreement": float((got.argmax(1) == reference.argmax(1)).float().mean()),
        "max_abs_logit_diff": float((got - reference).abs().max()),
        "val_samples": len(val),
        "report": compiled.report.as_dict(),
    }
    return compiled, metrics


def store_compiled_artifacts(store_artifact: Callable[[str, Path, str], None], out_dir: Path) -> list[str]:
    """Every file the backend wrote (engine / ONNX / .pt2, plans and reports) as a job artifact."""
    names = []
    for path in sorted(p for p in out_dir.iterdir() if p.is_file()):
        store_artifact(path.name, path, MEDIA_TYPES.get(path.suffix, "application/octet-stream"))
        names.append(path.name)
    return names

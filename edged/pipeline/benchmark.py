"""The pipeline's benchmark stage: latency p50/p95/p99 and energy per inference of the dense merged
model and, when the job compiled it, of the compiled one, on the same validation batch.

The dense model runs where the job trained (PyTorch, float32); the compiled one through its
`predict` (CPU tensors in and out, as a caller of the artifact would use it). The result has the
shape the dashboard reads: `{"latency": {"dense": LatencyStats, "compiled": LatencyStats}}`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from edged.compile.base import CompiledModel
from edged.data.task import Inputs
from edged.compile.inputs import batch_size, call_model, to_device
from edged.measure.latency import LatencyStats, latency_metrics, measure_latency
from edged.telemetry.reading import PowerSource

WARMUP = 5
ITERS = 50
GPU_BACKENDS = ("tensorrt", "cusparselt")  # their predict runs on CUDA (inputs and outputs on the CPU)


def benchmark_latency(model: nn.Module, compiled: Optional[CompiledModel], batch: Inputs, device: torch.device,
                      source: PowerSource) -> dict[str, Any]:
    """`latency_metrics(dense=..., compiled=...)` for the model (moved to `device`) and the compiled one."""
    items = batch_size(batch)
    model.to(device).eval()
    on_device = to_device(batch, device)
    variants: dict[str, LatencyStats] = {
        "dense": measure_latency(lambda x: call_model(model, x), [on_device], WARMUP, ITERS, str(device),
                                 source, items),
    }
    if compiled is not None:
        where = "cuda" if compiled.backend in GPU_BACKENDS else "cpu"
        variants["compiled"] = measure_latency(compiled.predict, [batch], WARMUP, ITERS, where, source, items)
    return latency_metrics(**variants)

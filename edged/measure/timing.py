"""Percentiles of one callable's time per call, on the CPU clock or with CUDA events (optionally from
a CUDA graph): what the benches and the compile backend's kernel tuning compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from edged.measure.clocks import capture_graph, cuda_event_ms, wall_clock_ms


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call; `items_per_s` = batch / mean latency."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    items_per_s: float
    iters: int
    cuda_graph: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(times_ms: list[float]) -> tuple[float, float, float, float]:
    """(p50, p95, p99, mean) of the times."""
    p50, p95, p99 = np.percentile(np.asarray(times_ms), [50, 95, 99])
    return float(p50), float(p95), float(p99), float(np.mean(times_ms))


def _timing(times_ms: list[float], batch: int, cuda_graph: bool) -> Timing:
    p50, p95, p99, mean = percentiles(times_ms)
    return Timing(p50, p95, p99, mean, batch * 1000.0 / mean, len(times_ms), cuda_graph)


@torch.inference_mode()
def time_cuda(
    fn: Callable[[], Any], batch: int, warmup: int = 20, iters: int = 100, cuda_graph: bool = False, repeat: int = 1
) -> Timing:
    """Time `fn()` on the current CUDA device with one pair of events per iteration
    (an iteration = one graph replay of `repeat` calls when `cuda_graph`; times are per call)."""
    if cuda_graph:
        graph, _ = capture_graph(fn, repeat=repeat)
        fn = graph.replay
    else:
        repeat = 1
    for _ in range(warmup):
        fn()
    return _timing(cuda_event_ms(fn, iters, repeat), batch, cuda_graph)


@torch.inference_mode()
def time_cpu(fn: Callable[[], Any], batch: int, warmup: int = 3, iters: int = 20) -> Timing:
    """Time `fn()` on the CPU with a monotonic clock."""
    for _ in range(warmup):
        fn()
    return _timing(wall_clock_ms(fn, iters), batch, cuda_graph=False)

"""GPU-correct timing of one callable: warm-up, per-iteration CUDA events, percentiles.

Sub-millisecond kernels cannot be timed with a host clock plus a synchronize per call (the sync
itself costs ~10-20 us), so on CUDA each iteration is bracketed by CUDA events recorded on the
stream and read after one final synchronize. `cuda_graph=True` captures the callable once and
times graph replays: that removes Python and kernel-launch overhead, which is what a deployed
fixed-shape model sees. A one-kernel graph still pays ~5-10 us of launch per replay, as much as a
small layer's kernel, so `repeat` captures the callable several times in one graph and reports the
time per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


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


def _stats(times_ms: list[float], batch: int, cuda_graph: bool) -> Timing:
    p50, p95, p99 = np.percentile(np.asarray(times_ms), [50, 95, 99])
    mean = float(np.mean(times_ms))
    return Timing(float(p50), float(p95), float(p99), mean, batch * 1000.0 / mean, len(times_ms), cuda_graph)


def capture_graph(fn: Callable[[], Any], warmup: int = 3, repeat: int = 1) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Capture `fn()` (fixed shapes, static inputs) `repeat` times in one CUDA graph; returns
    (graph, the last call's output).

    Warm-up runs on a side stream first, as torch requires, so lazy initialisation (cuBLAS and
    cuSPARSELt handles, workspace allocation) happens outside the capture.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeat):
            out = fn()
    return graph, out


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
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()  # read no event before the device is done
    return _stats([s.elapsed_time(e) / repeat for s, e in zip(starts, ends)], batch, cuda_graph)


@torch.inference_mode()
def time_cpu(fn: Callable[[], Any], batch: int, warmup: int = 3, iters: int = 20) -> Timing:
    """Time `fn()` on the CPU with a monotonic clock."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return _stats(times, batch, cuda_graph=False)

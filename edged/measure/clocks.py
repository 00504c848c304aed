"""The three clocks, each returning milliseconds per call of a no-argument callable.

- host wall clock (`wall_clock_ms`): perf_counter around each call; with a CUDA `sync` the device is
  synchronised before the clock is read, so the time covers the kernels, not only their launch;
- CUDA events (`cuda_event_ms`): sub-millisecond kernels cannot be timed with a host clock plus a
  synchronize per call (the sync itself costs ~10-20 us), so each iteration is bracketed by events
  recorded on the stream and read after one final synchronize;
- CUDA graphs (`capture_graph`): capture the callable once and time `graph.replay`, which removes
  Python and kernel-launch overhead, what a deployed fixed-shape model sees. A one-kernel graph still
  pays ~5-10 us of launch per replay, as much as a small layer's kernel, so `repeat` captures the
  callable several times in one graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def no_sync() -> None:
    """The CPU needs no synchronisation before its clock is read."""


def device_sync(device: str) -> Callable[[], None]:
    """What to call before reading a host clock around work on `device`."""
    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return no_sync


def wall_clock_ms(fn: Callable[[], Any], iters: int, sync: Callable[[], None] = no_sync) -> list[float]:
    """Time `iters` calls of `fn()` one by one with perf_counter, `sync()` before each clock read."""
    times_ms = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times_ms.append((time.perf_counter() - t0) * 1000.0)
    return times_ms


def cuda_event_ms(fn: Callable[[], Any], iters: int, repeat: int = 1) -> list[float]:
    """Time `iters` calls of `fn()` on the current CUDA stream, one pair of events per call; each
    time is divided by `repeat` (the calls one `fn()` stands for, e.g. a graph of `repeat` captures)."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()  # read no event before the device is done
    return [s.elapsed_time(e) / repeat for s, e in zip(starts, ends)]


def warm_up_on_side_stream(fn: Callable[[], Any], times: int) -> None:
    """Call `fn` `times` times on a side stream, ordered after and before the current stream's work: the warm-up
    torch requires before a CUDA graph capture."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(times):
            fn()
    torch.cuda.current_stream().wait_stream(stream)


def capture_graph(fn: Callable[[], Any], warmup: int = 3, repeat: int = 1) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Capture `fn()` (fixed shapes, static inputs) `repeat` times in one CUDA graph; returns
    (graph, the last call's output).

    Warm-up runs on a side stream first, as torch requires, so lazy initialisation (cuBLAS and
    cuSPARSELt handles, workspace allocation) happens outside the capture.
    """
    warm_up_on_side_stream(fn, warmup)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeat):
            out = fn()
    return graph, out


def graph_replay(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` captured once in a CUDA graph; the returned callable replays it."""
    graph, _ = capture_graph(fn)
    return graph.replay

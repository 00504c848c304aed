"""A training step as one CUDA graph, and the CUDA kernels one step spends its time in (`edged bench train-step`).

A captured step replays zero_grad, forward, backward and optimizer.step without Python or per-kernel launch
cost, which is what a fixed-shape training loop can reach; the optimizer must be built with `capturable=True`
and autocast run with `cache_enabled=False`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from edged.measure.clocks import capture_graph, warm_up_on_side_stream


def warm_up(step: Callable[[], None], times: int, side_stream: bool) -> None:
    """Run `step` `times` times; on a side stream when it is to be captured, as CUDA graph capture requires
    (kernels chosen, lazy state such as the optimizer's and the sparse deltas' weight copies allocated)."""
    if side_stream:
        warm_up_on_side_stream(step, times)
        return
    for _ in range(times):
        step()


def captured_step(step: Callable[[], None]) -> Callable[[], None]:
    """`step` (which sets grads to None first, so backward writes fresh gradients in the graph's pool) captured
    once, already warmed up; returns the replay. Inputs and parameters stay at the addresses the capture saw."""
    graph, _ = capture_graph(step, warmup=0)
    return graph.replay


def top_kernels(step: Callable[[], None], rows: int) -> str:
    """The `rows` events of one `step` with the most self CUDA time (kernels; operators have none of their own)."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)

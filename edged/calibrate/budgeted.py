"""The calibration pass over task data, with its micro-batch chosen to fit a memory budget.

Probe forwards of 1, 2, 4, ... samples measure the peak memory above the loaded model; the micro-batch is
the largest size measured under 85 % of the budget. The probes' samples count toward the statistics
exactly once, so the result does not depend on them.
"""

from __future__ import annotations

import math
import time
from typing import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from edged.calibrate.feature_norms import FeatureNormCollector
from edged.calibrate.ranges import RangeCollector
from edged.calibrate.memory import current_mb, measure_peak, release_free_cpu_memory
from edged.data.task import Inputs, num_samples, take, to_device
from edged.errors import InvalidInput, OutOfBudget
from edged.sparse.layers import WeightLayer

# Keep the predicted peak this far below the budget: allocator rounding and non-linear costs.
_HEADROOM = 0.85
_DEFAULT_MICRO_BATCH = 64  # without a budget
_MAX_MICRO_BATCH = 1024


@dataclass
class CalibrationResult:
    norms: dict[str, Tensor]  # weight name -> ||X_j||_2: Linear (in,), Conv2d (C_in, kh, kw)
    micro_batch: int
    samples: int
    peak_memory_mb: float | None  # peak above the loaded model during the pass
    seconds: float
    probe_mb: dict[str, float | None] = field(default_factory=dict)
    # weight name -> (amax, 99.99th percentile) of |input|, float64 (2,): the INT8 activation scales' source
    ranges: dict[str, Tensor] = field(default_factory=dict)


def calibrate(
    model: nn.Module,
    inputs: Inputs,
    layers: dict[str, WeightLayer],
    memory_budget_mb: float | None = None,
    micro_batch: int | None = None,
    device: torch.device | str = "cpu",
    on_samples: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Forward every sample of `inputs` once (eval mode, no grad) and return per-layer feature norms and
    input ranges (the same hooks' pass: the ranges cost one histogram of |x| per layer and batch).

    Give `memory_budget_mb` to pick the micro-batch automatically, or `micro_batch` to fix it.
    `on_samples(done, total)` is called after each micro-batch (a job's progress).
    """
    device = torch.device(device)
    if device.type == "cpu":
        release_free_cpu_memory()
    n = num_samples(inputs)
    if n == 0:
        raise InvalidInput("calibration needs at least one sample")
    if memory_budget_mb is not None and memory_budget_mb <= 0:
        raise InvalidInput(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
    model.eval()
    start = time.perf_counter()
    baseline = current_mb(device)
    with FeatureNormCollector(layers) as collector, RangeCollector(layers) as ranges, torch.no_grad():
        done = 0
        probes: dict[str, float | None] = {}
        if micro_batch is None:
            micro_batch, done, probes = _probe_micro_batch(model, inputs, device, memory_budget_mb, baseline)
        if micro_batch < 1:
            raise InvalidInput(f"micro_batch must be >= 1, got {micro_batch}")
        with measure_peak(device, baseline) as peak:
            for first in range(done, n, micro_batch):
                model(to_device(take(inputs, slice(first, first + micro_batch)), device))
                if on_samples is not None:
                    on_samples(min(first + micro_batch, n), n)
    peaks = [p for p in [peak.mb, *probes.values()] if p is not None]
    return CalibrationResult(
        norms=collector.norms(),
        micro_batch=micro_batch,
        samples=n,
        peak_memory_mb=max(peaks) if peaks else None,
        seconds=time.perf_counter() - start,
        probe_mb=probes,
        ranges=ranges.ranges(),
    )


def _forward_peak(model: nn.Module, inputs: Inputs, device: torch.device, baseline: float | None) -> float | None:
    with measure_peak(device, baseline) as peak:
        model(to_device(inputs, device))
    return peak.mb


def _probe_micro_batch(
    model: nn.Module, inputs: Inputs, device: torch.device, budget_mb: float | None, baseline: float | None
) -> tuple[int, int, dict[str, float | None]]:
    """Forward micro-batches of 1, 2, 4, ... samples (each sample once) while the next size, predicted in
    proportion to the last measured peak (pessimistic: the fixed part scales too), stays under the budget's
    headroom. The largest size MEASURED under it becomes the micro-batch: allocators and kernels do not
    grow linearly, so only a measured size is trusted. Returns (micro_batch, samples done, probe peaks)."""
    n = num_samples(inputs)
    one = _forward_peak(model, take(inputs, slice(0, 1)), device, baseline)
    if budget_mb is None:
        return min(n, _DEFAULT_MICRO_BATCH), 1, {"1": one}
    if one is None:
        raise InvalidInput("memory_budget_mb needs a memory probe, which this platform lacks; give micro_batch")
    if one > budget_mb:
        raise OutOfBudget(
            f"memory budget {budget_mb:g} MB is smaller than one calibration sample needs ({one:.1f} MB)",
            detail={"accepted": f"memory_budget_mb >= {math.ceil(one / _HEADROOM)}"},
        )
    limit = budget_mb * _HEADROOM
    probes: dict[str, float | None] = {"1": one}
    size, peak, done = 1, one, 1
    while size < _MAX_MICRO_BATCH and done + 2 * size <= n and peak * 2 <= limit:
        measured = _forward_peak(model, take(inputs, slice(done, done + 2 * size)), device, baseline)
        done += 2 * size
        probes[str(2 * size)] = measured
        if measured is None or measured > limit:
            break
        size, peak = 2 * size, measured
    return size, done, probes

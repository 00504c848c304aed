"""Latency of a model as a job reports it: p50/p95/p99, throughput and energy per inference.

Each iteration is timed on its own with the host clock; on CUDA the device is synchronised before
the clock is read, so the time covers the kernels, not only their launch. `latency_metrics` gives
the shape a job's metrics hold: `{"latency": {variant: LatencyStats.as_dict()}}`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from edged.errors import InvalidInput
from edged.measure.clocks import device_sync, wall_clock_ms
from edged.measure.timing import percentiles
from edged.telemetry.energy import EnergyMeter
from edged.telemetry.reading import PowerSource


@dataclass(frozen=True)
class LatencyStats:
    """Units: ms per call, calls per second, joules per call (None without a power source)."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float  # items per second: calls/s times batch_size
    iters: int
    batch_size: int
    energy_per_inference_j: Optional[float]  # per item (one sample of a batch)
    energy_method: Optional[str]
    device: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cycling(fn: Callable[[Any], Any], inputs: Sequence[Any]) -> Callable[[], Any]:
    """A no-argument call of `fn` on inputs[0], inputs[1], ... round and round."""
    each = itertools.cycle(inputs)
    return lambda: fn(next(each))


def measure_latency(
    fn: Callable[[Any], Any],
    inputs: Sequence[Any],
    warmup: int = 10,
    iters: int = 100,
    device: str = "cpu",
    power_source: Optional[PowerSource] = None,
    batch_size: int = 1,
) -> LatencyStats:
    """Call `fn(inputs[i % len(inputs)])` `warmup` times untimed, then `iters` times timed.

    Runs under torch.inference_mode(). With a power source the timed loop is wrapped in an
    EnergyMeter; energy per inference is its joules / (iters * batch_size). Short loops on a
    sampled (not counter) source give rough energy: use enough iters to span several source intervals.
    """
    if not inputs or iters < 1 or warmup < 0 or batch_size < 1:
        raise InvalidInput(
            f"measure_latency needs >= 1 input, iters >= 1, warmup >= 0, batch_size >= 1; got "
            f"{len(inputs)} inputs, iters={iters}, warmup={warmup}, batch_size={batch_size}"
        )
    sync = device_sync(device)
    with torch.inference_mode():
        wall_clock_ms(_cycling(fn, inputs), warmup, sync)
        if power_source is None:
            times_ms, meter = wall_clock_ms(_cycling(fn, inputs), iters, sync), None
        else:
            with EnergyMeter(power_source) as meter:
                times_ms = wall_clock_ms(_cycling(fn, inputs), iters, sync)
    joules = meter.result.joules if meter is not None and meter.result is not None else None
    p50, p95, p99, mean = percentiles(times_ms)
    total_s = sum(times_ms) / 1000.0
    return LatencyStats(
        p50_ms=p50, p95_ms=p95, p99_ms=p99, mean_ms=mean,
        throughput_per_s=iters * batch_size / total_s if total_s > 0 else float("inf"),
        iters=iters, batch_size=batch_size,
        energy_per_inference_j=joules / (iters * batch_size) if joules is not None else None,
        energy_method=meter.result.energy_method if meter is not None and meter.result else None,
        device=device,
    )


def latency_metrics(**variants: LatencyStats) -> dict[str, Any]:
    """{"latency": {variant: stats}} to merge into jobs.metrics, e.g. latency_metrics(dense=a, sparse_2_4=b)."""
    return {"latency": {name: stats.as_dict() for name, stats in variants.items()}}

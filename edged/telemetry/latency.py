"""Latency harness: p50/p95/p99, throughput and energy per inference of one callable.

Each iteration is timed on its own (perf_counter around the call); on CUDA the device is
synchronised before reading the clock, so the time covers the kernels, not only their launch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from edged.errors import InvalidInput
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


def _synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _timed_loop(fn: Callable[[Any], Any], inputs: Sequence[Any], iters: int, sync: Callable[[], None]) -> list[float]:
    times_ms = []
    for i in range(iters):
        x = inputs[i % len(inputs)]
        sync()
        t0 = time.perf_counter()
        fn(x)
        sync()
        times_ms.append((time.perf_counter() - t0) * 1000.0)
    return times_ms


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

    Runs under torch.inference_mode() when torch is importable. With a power source the timed
    loop is wrapped in an EnergyMeter; energy per inference is its joules / (iters * batch_size).
    Short loops on a sampled (not counter) source give rough energy: use enough iters to span
    several source intervals.
    """
    if not inputs or iters < 1 or warmup < 0 or batch_size < 1:
        raise InvalidInput(
            f"measure_latency needs >= 1 input, iters >= 1, warmup >= 0, batch_size >= 1; got "
            f"{len(inputs)} inputs, iters={iters}, warmup={warmup}, batch_size={batch_size}"
        )
    sync = _synchronizer(device)
    with _no_grad():
        _timed_loop(fn, inputs, warmup, sync)
        if power_source is None:
            times_ms, meter = _timed_loop(fn, inputs, iters, sync), None
        else:
            with EnergyMeter(power_source) as meter:
                times_ms = _timed_loop(fn, inputs, iters, sync)
    joules = meter.result.joules if meter is not None and meter.result is not None else None
    p50, p95, p99 = np.percentile(np.asarray(times_ms), [50, 95, 99])
    total_s = sum(times_ms) / 1000.0
    return LatencyStats(
        p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99),
        mean_ms=float(np.mean(times_ms)),
        throughput_per_s=iters * batch_size / total_s if total_s > 0 else float("inf"),
        iters=iters, batch_size=batch_size,
        energy_per_inference_j=joules / (iters * batch_size) if joules is not None else None,
        energy_method=meter.result.energy_method if meter is not None and meter.result else None,
        device=device,
    )


def _no_grad() -> Any:
    import torch  # imported here so that `import edged.telemetry` stays light

    return torch.inference_mode()

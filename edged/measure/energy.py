"""Energy per item of a callable over a fixed stretch of back-to-back calls, and the power source
that sees GPU inference energy. Energy is optional: without a source the answer is None."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from edged.measure.timing import time_cuda
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.energy import EnergyMeter
from edged.telemetry.reading import PowerSource
from edged.telemetry.sources import open_power_source

ENERGY_SECONDS = 2.0  # long enough for several power readings


def energy_per_item(fn: Callable[[], Any], batch: int, source: Optional[PowerSource],
                    seconds: float = ENERGY_SECONDS) -> Optional[float]:
    """Joules per item over ~`seconds` of back-to-back CUDA calls (None without a power source)."""
    if source is None:
        return None
    one = time_cuda(fn, batch, warmup=3, iters=5).mean_ms / 1000.0
    calls = max(10, int(seconds / max(one, 1e-6)))
    with EnergyMeter(source) as meter:
        for _ in range(calls):
            fn()
    joules = meter.result.joules if meter.result else None
    return joules / (calls * batch) if joules is not None else None


def gpu_power_source() -> tuple[Optional[PowerSource], str]:
    """jtop or ina3221 (the board's input rail) or NVML (the GPU): sources that see GPU inference energy.
    RAPL measures only the CPU package, so it is not used here. Returns (source or None, its name or why not)."""
    try:
        source = open_power_source(TelemetryConfig())
    except Exception as exc:  # energy is optional: never fail the benchmark over it
        return None, f"no power source: {exc}"
    if source.name not in ("jtop", "ina3221", "nvml"):
        source.close()
        return None, f"no GPU power source (found {source.name!r})"
    return source, source.name

"""Energy over time: from a hardware counter where one exists, else by trapezoid integration.

`EnergyIntegrator` folds a stream of readings into joules. `EnergyMeter` wraps a pipeline stage
(`with EnergyMeter(source) as m: ...`) and reports its joules, seconds and peak memory.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

from edged.telemetry.reading import PowerReading, PowerSource


class EnergyIntegrator:
    """Joules between the first and the last reading added.

    From a cumulative counter (`energy_j`) the difference to the previous reading that had one
    is used: exact, and a failed read in between loses nothing. Readings with power only are
    integrated by the trapezoid (p0 + p1) / 2 * dt from the previous reading with power, bridging
    failed reads by interpolation. `method` says which was used: "counter", "trapezoid", "mixed".
    """

    def __init__(self) -> None:
        self.joules: Optional[float] = None  # None until one interval could be integrated
        self._last_counter: Optional[PowerReading] = None
        self._last_power: Optional[PowerReading] = None
        self._methods: set[str] = set()

    def _accumulate(self, joules: float, method: str) -> None:
        self.joules = (self.joules or 0.0) + joules
        self._methods.add(method)

    def add(self, reading: PowerReading) -> None:
        counter, powered = self._last_counter, self._last_power
        if reading.energy_j is not None:
            if counter is not None and counter.energy_j is not None:
                self._accumulate(reading.energy_j - counter.energy_j, "counter")
            self._last_counter = reading
        elif reading.power_w is not None and powered is not None and powered.power_w is not None:
            # never integrate over time a counter already covered
            if counter is None or powered.t >= counter.t:
                dt = reading.t - powered.t
                self._accumulate((powered.power_w + reading.power_w) / 2.0 * dt, "trapezoid")
        if reading.power_w is not None:
            self._last_power = reading

    @property
    def method(self) -> Optional[str]:
        if not self._methods:
            return None
        return next(iter(self._methods)) if len(self._methods) == 1 else "mixed"


@dataclass(frozen=True)
class StageMeasurement:
    """What one wrapped stage cost. Units: s, J, MiB. Fields the machine cannot measure are None."""

    seconds: float
    joules: Optional[float]
    energy_method: Optional[str]  # "counter" | "trapezoid" | "mixed" | None (no power source)
    peak_host_mb: Optional[float]  # peak resident memory of this process during the stage
    peak_gpu_mb: Optional[float]  # torch.cuda.max_memory_allocated during the stage
    samples: int  # power readings taken


def _rss_mb() -> Optional[float]:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask: telemetry works without it
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


class EnergyMeter:
    """Context manager measuring one stage: `with EnergyMeter(source) as m: ...; m.result`.

    A background thread reads the source every `interval_s` (never faster than the source's
    `min_interval_s`) for trapezoid integration and samples this process's resident memory.
    With a counter source only the first and last readings matter, but the thread still tracks
    peak memory. The result is set on exit, also when the stage raised.
    """

    def __init__(self, source: PowerSource, interval_s: float = 0.2) -> None:
        self._source = source
        self._interval = max(interval_s, source.min_interval_s)
        self._integrator = EnergyIntegrator()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._peak_rss: Optional[float] = None
        self._samples = 0
        self._t0 = 0.0
        self.result: Optional[StageMeasurement] = None

    def _sample(self) -> None:
        self._integrator.add(self._source.read())
        self._samples += 1
        rss = _rss_mb()
        if rss is not None:
            self._peak_rss = max(self._peak_rss or 0.0, rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> "EnergyMeter":
        if _cuda_in_use():
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="edged-energy-meter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        peak_gpu = None
        if _cuda_in_use():
            import torch

            torch.cuda.synchronize()  # the stage's kernels must finish inside its window
            peak_gpu = torch.cuda.max_memory_allocated() / 2**20
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample()
        self.result = StageMeasurement(
            seconds=time.perf_counter() - self._t0,
            joules=self._integrator.joules,
            energy_method=self._integrator.method,
            peak_host_mb=self._peak_rss,
            peak_gpu_mb=peak_gpu,
            samples=self._samples,
        )

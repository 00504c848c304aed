"""What every power source returns, and the host statistics any source can add.

A `PowerReading` is one tick: instantaneous power, a cumulative energy counter where the hardware
has one, per-rail power, utilisation, memory and temperature. A value the source cannot measure
is None; a source never raises from `read()`, so a flaky sensor costs a sample, not the daemon.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowerReading:
    """One sample. Units: seconds, watts, joules, percent (0-100), MiB, degrees Celsius."""

    t: float  # unix time, s
    power_w: Optional[float] = None  # total power the source sees (board input, GPU, or CPU package)
    energy_j: Optional[float] = None  # hardware counter since the source was opened (monotonic)
    rails: dict[str, float] = field(default_factory=dict)  # rail name -> W
    gpu_util: Optional[float] = None  # %
    cpu_util: Optional[float] = None  # % of all cores, since the previous read
    mem_used_mb: Optional[float] = None  # host RAM in use (on a Jetson: shared by CPU and GPU), MiB
    temp_c: Optional[float] = None  # hottest sensor the source reports, degC


def host_stats() -> dict[str, Optional[float]]:
    """CPU utilisation and RAM in use, from psutil when installed (None otherwise)."""
    try:
        import psutil
    except ImportError:
        return {"cpu_util": None, "mem_used_mb": None}
    vm = psutil.virtual_memory()
    return {
        "cpu_util": float(psutil.cpu_percent(interval=None)),
        "mem_used_mb": (vm.total - vm.available) / 2**20,
    }


class PowerSource:
    """Base of every source: subclasses implement `_read()`, returning a partial reading.

    `read()` fills in host statistics the source left None and turns any exception into an
    empty reading (logged once per distinct message), because a sampler tick must never fail;
    `read_power()` is the same without the host statistics.
    """

    name = "none"
    min_interval_s = 0.0  # sample no faster than this (jtop: 0.5 s, its maintainer's advice)
    has_energy_counter = False

    def __init__(self) -> None:
        self._logged_errors: set[str] = set()

    def _read(self) -> PowerReading:
        return PowerReading(t=time.time())

    def read_power(self) -> PowerReading:
        """The source's own reading, without host statistics: cheap enough to take around every micro-batch of
        predictions, and it leaves psutil's process-wide CPU-percent baseline to the sampler's `read()`."""
        return self._guarded(self._read)

    def _guarded(self, read: Callable[[], PowerReading]) -> PowerReading:
        """`read()`, or an empty reading (the error logged once) when the sensor fails."""
        try:
            return read()
        except Exception as e:  # a sensor hiccup must not stop sampling, nor fail a prediction
            message = f"{type(e).__name__}: {e}"
            if message not in self._logged_errors:
                self._logged_errors.add(message)
                log.warning("power source %s failed to read: %s", self.name, message)
            return PowerReading(t=time.time())

    def read_total(self) -> PowerReading:
        """A reading with at least the total power or energy counter, as cheaply as the source can take it
        (per micro-batch of predictions); rails and the rest may be left out. By default `read_power()`."""
        return self.read_power()

    def read(self) -> PowerReading:
        reading = self.read_power()
        host = host_stats()
        return replace(
            reading,
            cpu_util=reading.cpu_util if reading.cpu_util is not None else host["cpu_util"],
            mem_used_mb=reading.mem_used_mb if reading.mem_used_mb is not None else host["mem_used_mb"],
        )

    def close(self) -> None:
        """Release the device handle or connection (idempotent)."""

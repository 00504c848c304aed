"""Energy per inference: the daemon's power source read just before and just after each micro-batch's forward,
on the inference thread.

The joules are what the source sees over that window, the whole board (jtop, INA3221 `VDD_IN`), the GPUs
(NVML) or the CPU packages (RAPL), idle draw included, not the increment the forward caused: the same
figure `metrics.latency.*.energy_per_inference_j` of a job gives. From an energy counter (RAPL) the window is
the counter's difference; from power alone (INA3221, jtop, and NVML, whose energy counter costs 3.2 ms a query
on an H100 against 2 us for the power) it is the trapezoid of the two readings over the window. jtop refreshes
its readings every 0.5 s at most, so there the two readings may be the same cached one: power times the
forward's wall time. A source that cannot read, or `none`, gives None,
and a task's energy stays null rather than zero.

Each end is one `read_total()`: the cheapest reading with the total (an INA3221 reads only its `VDD_IN`
channel, 2 of its 6 files: on a board each is an I2C transfer). Measured against fake sysfs trees on the x86
build machine, a micro-batch's two readings cost ~27 us (RAPL) and ~74 us (INA3221's `VDD_IN`; all six files
took ~117 us).

The task server owns its own source object (opened like the sampler's, from the same settings): sources keep
per-reader state (RAPL's last counter, psutil's CPU baseline), which two threads must not share.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from edged.telemetry.config import TelemetryConfig
from edged.telemetry.energy import EnergyIntegrator
from edged.telemetry.reading import PowerReading, PowerSource
from edged.telemetry.sources import open_power_source

log = logging.getLogger(__name__)


class InferenceEnergy:
    def __init__(self, source: PowerSource) -> None:
        self.source = source
        self._reads = source.name != "none"  # the none source never reads: skip even the clock

    @classmethod
    def from_settings(cls, settings: Any) -> "InferenceEnergy":
        """The configured power source (`auto` picks as the sampler does); `none` when it cannot be opened
        here, which costs the energy figures, never the predictions."""
        try:
            return cls(open_power_source(TelemetryConfig.from_settings(settings)))
        except Exception as exc:  # the sampler already opened it; a second open may still fail
            log.warning("task energy is not measured: the power source did not open: %s", exc)
            return cls(PowerSource())

    def start(self) -> Optional[PowerReading]:
        """The reading before a forward (None without a source)."""
        return self.source.read_total() if self._reads else None

    def joules_since(self, start: Optional[PowerReading]) -> Optional[float]:
        """Joules from `start` to now; None when either end has neither an energy counter nor power."""
        if start is None:
            return None
        integrator = EnergyIntegrator()
        integrator.add(start)
        integrator.add(self.source.read_total())
        return integrator.joules

    def close(self) -> None:
        self.source.close()

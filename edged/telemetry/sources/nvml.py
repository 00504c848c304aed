"""NVML (nvidia-ml-py's `pynvml`): discrete NVIDIA GPUs' energy counter and power draw.

`nvmlDeviceGetTotalEnergyConsumption` is millijoules since the driver loaded (Volta and newer);
`nvmlDeviceGetPowerUsage` is milliwatts (a 1 s average on Ampere and newer). Jetson's integrated
GPU supports neither, so there NVML is unavailable and jtop is used instead. With several GPUs
the energies and powers are summed; rails are per GPU ("gpu0", ...).
"""

from __future__ import annotations

import time
from typing import Any, Optional

from edged.errors import InvalidInput, Unavailable
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.reading import PowerReading, PowerSource


def _device_indices(spec: str, count: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(count))
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"nvml_devices must be 'all' or comma-separated integers, got {spec!r}") from None
    bad = [i for i in indices if not 0 <= i < count]
    if bad or not indices:
        raise InvalidInput(f"nvml_devices {spec!r} names GPUs outside 0..{count - 1}")
    return indices


class NvmlSource(PowerSource):
    name = "nvml"

    def __init__(self, pynvml: Any, handles: list[Any], energy_supported: bool) -> None:
        super().__init__()
        self._nvml = pynvml
        self._handles = handles
        self.has_energy_counter = energy_supported
        self._energy_base_mj = self._energy_mj() if energy_supported else 0
        self._closed = False

    def _energy_mj(self) -> int:
        return sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles)

    def _optional(self, fn: Any, *args: Any) -> Optional[Any]:
        """One NVML query that a device may not support: None instead of NVMLError."""
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _read(self) -> PowerReading:
        nvml = self._nvml
        rails: dict[str, float] = {}
        utils, temps = [], []
        for i, h in enumerate(self._handles):
            mw = self._optional(nvml.nvmlDeviceGetPowerUsage, h)
            if mw is not None:
                rails[f"gpu{i}"] = mw / 1000.0
            util = self._optional(nvml.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                utils.append(float(util.gpu))
            temp = self._optional(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
            if temp is not None:
                temps.append(float(temp))
        energy = (self._energy_mj() - self._energy_base_mj) / 1000.0 if self.has_energy_counter else None
        return PowerReading(
            t=time.time(),
            power_w=sum(rails.values()) if rails else None,
            energy_j=energy,
            rails=rails,
            gpu_util=sum(utils) / len(utils) if utils else None,
            temp_c=max(temps) if temps else None,
        )

    def read_total(self) -> PowerReading:
        """The power alone (one query per GPU): what each micro-batch of predictions reads at both ends, its energy
        then power x time. Not the energy counter: on an H100 `nvmlDeviceGetTotalEnergyConsumption` took 3.2 ms a
        call against 2 us for the power, so the two ends of a batch cost ~6 ms, more than a ViT-B/16 forward at
        batch 1 (4 ms). The sampler's readings keep the counter."""
        return self._guarded(self._power_only)

    def _power_only(self) -> PowerReading:
        powers = [self._optional(self._nvml.nvmlDeviceGetPowerUsage, h) for h in self._handles]
        known = [mw / 1000.0 for mw in powers if mw is not None]
        return PowerReading(t=time.time(), power_w=sum(known) if known else None)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._nvml.nvmlShutdown()


def open_source(config: TelemetryConfig) -> NvmlSource:
    try:
        import pynvml
    except ImportError:
        raise Unavailable("nvidia-ml-py (pynvml) is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise Unavailable(f"NVML did not initialise ({e}): no NVIDIA driver or no discrete GPU") from None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise Unavailable("NVML found no GPU")
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in _device_indices(config.nvml_devices, count)]
        energy_ok = _supports(pynvml, pynvml.nvmlDeviceGetTotalEnergyConsumption, handles)
        power_ok = _supports(pynvml, pynvml.nvmlDeviceGetPowerUsage, handles)
        if not (energy_ok or power_ok):
            raise Unavailable("NVML reports neither energy nor power for these GPUs (integrated GPU?)")
    except BaseException:
        pynvml.nvmlShutdown()
        raise
    return NvmlSource(pynvml, handles, energy_supported=energy_ok)


def _supports(pynvml: Any, query: Any, handles: list[Any]) -> bool:
    try:
        for h in handles:
            query(h)
        return True
    except pynvml.NVMLError:
        return False

"""Telemetry settings, read from the daemon's Settings object.

The fields below are looked up on `Settings` under the names in `SETTINGS_FIELDS`; a Settings
object that lacks one gets the default, so telemetry works with any Settings version.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from edged.errors import InvalidInput


@dataclass(frozen=True)
class TelemetryConfig:
    power_source: str = "auto"  # auto | jtop | ina3221 | nvml | rapl | none
    sysfs_root: str = "/sys"  # RAPL under <root>/class/powercap, INA3221 under <root>/class/hwmon
    active_interval_s: float = 1.0  # sampler period while a job runs
    idle_interval_s: float = 5.0  # sampler period with no job running (never faster than active)
    retention_rows: int = 100_000  # oldest telemetry_samples rows beyond this are pruned
    nvml_devices: str = "all"  # "all" or comma-separated NVML indices, e.g. "0,1"

    def __post_init__(self) -> None:
        if self.idle_interval_s <= 0 or self.active_interval_s <= 0:
            raise InvalidInput(
                f"telemetry intervals must be > 0 s, got idle={self.idle_interval_s} "
                f"active={self.active_interval_s}"
            )
        if self.retention_rows < 1:
            raise InvalidInput(f"telemetry_retention_rows must be >= 1, got {self.retention_rows}")

    @classmethod
    def from_settings(cls, settings: Any) -> "TelemetryConfig":
        values = {
            f.name: getattr(settings, SETTINGS_FIELDS[f.name])
            for f in fields(cls)
            if hasattr(settings, SETTINGS_FIELDS[f.name])
        }
        if "sysfs_root" in values:
            values["sysfs_root"] = str(values["sysfs_root"])  # Settings holds a Path
        if "active_interval_s" in values and "idle_interval_s" not in values:
            values["idle_interval_s"] = max(cls.idle_interval_s, values["active_interval_s"])
        return cls(**values)


# TelemetryConfig field -> Settings attribute (EDGED_<upper> in the environment).
SETTINGS_FIELDS = {
    "power_source": "power_source",
    "sysfs_root": "sysfs_root",
    "active_interval_s": "telemetry_interval_s",
    "idle_interval_s": "telemetry_idle_interval_s",
    "retention_rows": "telemetry_retention_rows",
    "nvml_devices": "nvml_devices",
}

"""The fallback: no power sensor; readings carry only host CPU and memory statistics."""

from __future__ import annotations

from edged.telemetry.config import TelemetryConfig
from edged.telemetry.reading import PowerSource


def open_source(config: TelemetryConfig) -> PowerSource:
    return PowerSource()

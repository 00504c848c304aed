"""Power sources by name, chosen by capability: a name -> module table with an `auto` fallback.

Each module provides `open_source(config) -> PowerSource` and raises `Unavailable` (with the
reason) when its hardware, service or permission is missing. `auto` tries them in the order of
`SOURCES` and takes the first that opens; `none` always opens.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from edged.errors import InvalidInput, Unavailable
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.reading import PowerSource

log = logging.getLogger(__name__)

# Preference order for `auto`: the board's own input rail beats a GPU-only counter beats CPU-only.
# jtop and ina3221 read the same Jetson monitors; jtop first, as it also reports GPU load and temperatures.
SOURCES = {
    "jtop": "edged.telemetry.sources.jtop",
    "ina3221": "edged.telemetry.sources.ina3221",
    "nvml": "edged.telemetry.sources.nvml",
    "rapl": "edged.telemetry.sources.rapl",
    "none": "edged.telemetry.sources.none",
}


def open_named_source(name: str, config: TelemetryConfig) -> PowerSource:
    """Open one source by name; raises Unavailable (why) or InvalidInput (unknown name)."""
    if name not in SOURCES:
        raise InvalidInput(f"unknown power source {name!r}; accepted: auto, {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[name]).open_source(config)


def open_power_source(config: TelemetryConfig) -> PowerSource:
    """The configured source, or with `auto` the first one this machine supports."""
    if config.power_source != "auto":
        return open_named_source(config.power_source, config)
    for name in SOURCES:
        try:
            source = open_named_source(name, config)
        except Unavailable as e:
            log.info("power source %s unavailable: %s", name, e.message)
            continue
        log.info("power source: %s", name)
        return source
    raise AssertionError("the 'none' source always opens")


def describe_power_source(config: TelemetryConfig) -> dict[str, Any]:
    """For `edged doctor`: which source is used and why each other one is or is not usable.

    Returns {"configured": str, "selected": str | None, "sources": [{"name", "available",
    "reason"}]}. Every source is opened and closed once, so call this once, not per request.
    """
    report = []
    for name in SOURCES:
        try:
            open_named_source(name, config).close()
            report.append({"name": name, "available": True, "reason": "opens on this machine"})
        except Unavailable as e:
            report.append({"name": name, "available": False, "reason": e.message})
    if config.power_source == "auto":
        selected = next(r["name"] for r in report if r["available"])
    else:
        chosen = next((r for r in report if r["name"] == config.power_source), None)
        if chosen is None:
            raise InvalidInput(f"unknown power source {config.power_source!r}; accepted: auto, {', '.join(SOURCES)}")
        selected = config.power_source if chosen["available"] else None
    return {"configured": config.power_source, "selected": selected, "sources": report}

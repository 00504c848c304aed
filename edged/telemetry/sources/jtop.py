"""jetson-stats (`jtop`): a Jetson's board input power and rails, GPU load, RAM, temperatures.

jtop talks to the jetson_stats service over /run/jtop.sock; without the service (any machine
that is not a Jetson) it raises, so availability is "importable and the socket exists".
`jtop.power` is {"rail": {name: {"power": mW, ...}}, "tot": {"power": mW, ...}} where `tot` is
the board input rail (VDD_IN / POM_5V_IN). There is no energy counter: energy is integrated.
The client updates in its own thread every `interval` seconds (>= 0.5 s, as its maintainer
recommends), so `read()` only copies its latest values.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from edged.errors import Unavailable
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.reading import PowerReading, PowerSource

JTOP_SOCKET = "/run/jtop.sock"
JTOP_MIN_INTERVAL_S = 0.5
_OFFLINE_TEMP_C = -256.0  # jtop's value for a sensor that is switched off


def parse_jtop(power: dict, stats: dict, memory: dict, temperature: dict, t: float) -> PowerReading:
    """Map jtop's dictionaries (its units: mW, kB, %, degC) onto a PowerReading."""
    total = power.get("tot") or {}
    total_mw = total.get("power")
    rails = {name: rail["power"] / 1000.0 for name, rail in (power.get("rail") or {}).items() if "power" in rail}
    gpu = stats.get("GPU")
    ram_used_kb = (memory.get("RAM") or {}).get("used")
    temps = [
        float(v["temp"]) for v in temperature.values()
        if v.get("online", True) and v.get("temp") is not None and v["temp"] > _OFFLINE_TEMP_C
    ]
    return PowerReading(
        t=t,
        power_w=total_mw / 1000.0 if total_mw is not None else None,
        rails=rails,
        gpu_util=float(gpu) if isinstance(gpu, (int, float)) else None,
        mem_used_mb=ram_used_kb / 1024.0 if ram_used_kb is not None else None,
        temp_c=max(temps) if temps else None,
    )


class JtopSource(PowerSource):
    name = "jtop"
    min_interval_s = JTOP_MIN_INTERVAL_S

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client

    def _read(self) -> PowerReading:
        c = self._client
        return parse_jtop(c.power or {}, c.stats or {}, c.memory or {}, c.temperature or {}, time.time())

    def close(self) -> None:
        self._client.close()


def open_source(config: TelemetryConfig, interval_s: Optional[float] = None) -> JtopSource:
    try:
        from jtop import jtop
    except ImportError:
        raise Unavailable("jetson-stats (jtop) is not installed") from None
    if not os.path.exists(JTOP_SOCKET):
        raise Unavailable(f"no jtop service socket at {JTOP_SOCKET} (not a Jetson, or jtop.service stopped)")
    interval = max(JTOP_MIN_INTERVAL_S, interval_s or config.active_interval_s)
    client = jtop(interval=interval)
    try:
        client.start()
    except Exception as e:  # jtop raises JtopException / OSError when the service refuses us
        raise Unavailable(f"jtop service did not accept a connection: {e}") from None
    return JtopSource(client)

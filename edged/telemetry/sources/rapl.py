"""Linux powercap RAPL: CPU package energy counters (`intel-rapl:N/energy_uj`).

The counters are cumulative microjoules that wrap at `max_energy_range_uj`; we unwrap them into
one monotonic energy since open, and derive power from consecutive reads. Only top-level
package zones are summed (sub-zones such as core/uncore are already inside their package).
Recent kernels make `energy_uj` root-only, so availability is "readable", not "present".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edged.errors import Unavailable
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.reading import PowerReading, PowerSource

_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass
class _Zone:
    name: str
    energy_path: Path
    max_range_uj: int
    last_uj: int
    total_uj: int = 0  # unwrapped since open

    def advance(self) -> int:
        """Read the counter, add the (wrap-corrected) delta to total_uj; return the delta."""
        now = int(self.energy_path.read_text().strip())
        delta = now - self.last_uj
        if delta < 0:  # the counter wrapped past max_energy_range_uj back to 0
            delta += self.max_range_uj
        self.last_uj = now
        self.total_uj += delta
        return delta


def find_zones(sysfs_root: str) -> list[_Zone]:
    """Readable package zones under <sysfs_root>/class/powercap; raises Unavailable with why not."""
    powercap = Path(sysfs_root) / "class" / "powercap"
    if not powercap.is_dir():
        raise Unavailable(f"no powercap directory at {powercap} (no RAPL on this kernel/CPU)")
    dirs = sorted(d for d in powercap.iterdir() if _PACKAGE_ZONE.match(d.name))
    if not dirs:
        raise Unavailable(f"no intel-rapl:N package zones under {powercap}")
    zones, denied = [], []
    for d in dirs:
        try:
            name = (d / "name").read_text().strip() if (d / "name").exists() else d.name
            zones.append(_Zone(
                name=name,
                energy_path=d / "energy_uj",
                max_range_uj=int((d / "max_energy_range_uj").read_text().strip()),
                last_uj=int((d / "energy_uj").read_text().strip()),
            ))
        except PermissionError:
            denied.append(d.name)
    if not zones:
        raise Unavailable(f"RAPL energy_uj is not readable ({', '.join(denied)}): root-only on this kernel")
    return zones


class RaplSource(PowerSource):
    name = "rapl"
    has_energy_counter = True

    def __init__(self, zones: list[_Zone]) -> None:
        super().__init__()
        self._zones = zones
        self._last_t = time.monotonic()

    def _read(self) -> PowerReading:
        deltas_uj = {z.name: z.advance() for z in self._zones}  # may raise: then the clock stays put
        now = time.monotonic()
        dt, self._last_t = now - self._last_t, now
        rails = {name: d / 1e6 / dt for name, d in deltas_uj.items()} if dt > 0 else {}
        power: Optional[float] = sum(rails.values()) if rails else None
        return PowerReading(
            t=time.time(),
            power_w=power,
            energy_j=sum(z.total_uj for z in self._zones) / 1e6,
            rails=rails,
        )


def open_source(config: TelemetryConfig) -> RaplSource:
    return RaplSource(find_zones(config.sysfs_root))

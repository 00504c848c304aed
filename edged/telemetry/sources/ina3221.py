"""TI INA3221 power monitors through Linux hwmon: a Jetson's rails without the jtop service.

JetPack 5 and 6 (Jetson Linux r35/r36) bind the mainline `ina3221` hwmon driver: one hwmon device per
chip, `<sysfs>/class/hwmon/hwmonN` with `name` = "ina3221" and, per channel N = 1..3, `inN_label`
(the rail's name from the device tree), `inN_input` (bus voltage, mV) and `currN_input` (current, mA).
The driver has no power file (the chip measures shunt and bus voltages; power is computed by the
host), so a rail's power is mV * mA / 1e6 W. `in7_label` ("sum of shunt voltages") and channels
labelled `NC` are not rails and are skipped because their labels are not known rails. JetPack 4's
`ina3221x` IIO driver (`rail_name_N`, `in_powerN_input` in mW) predates Orin and is not read.

Chips are found by their `name` and rails by their label, never by hwmon index (which changes from
boot to boot). There is no energy counter: energy is integrated from power. A conversion takes
milliseconds (`update_interval`), far below any sampler period, so no minimum interval is needed.
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

CHIP_NAME = "ina3221"
# Orin NX / Orin Nano: the module's input rail, which the other two rails are part of.
BOARD_INPUT_RAIL = "VDD_IN"
# Rails of Orin NX / Nano (VDD_IN, VDD_CPU_GPU_CV, VDD_SOC) and of AGX Orin (VDD_GPU_SOC, VDD_CPU_CV and
# VIN_SYS_5V0 on the first chip, VDDQ_VDD2_1V8AO on the second). AGX Orin labels no input rail: its
# VIN_SYS_5V0 is the module's 5 V supply, separate from the high-voltage input the GPU and CPU rails
# draw from, so its total is the sum of the rails (as jetson-stats computes it there).
KNOWN_RAILS = frozenset({
    BOARD_INPUT_RAIL, "VDD_CPU_GPU_CV", "VDD_SOC",
    "VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO",
})
_LABEL_FILE = re.compile(r"^in(\d+)_label$")


@dataclass(frozen=True)
class Rail:
    label: str
    voltage_path: Path  # inN_input, mV
    current_path: Path  # currN_input, mA

    def watts(self) -> Optional[float]:
        """mV * mA in W; None when either file is missing, unreadable or not a number."""
        try:
            millivolts = int(self.voltage_path.read_text().strip())
            milliamps = int(self.current_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return millivolts * milliamps / 1e6


def _text(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _chip_rails(chip: Path) -> list[Rail]:
    rails = []
    for label_file in sorted(chip.iterdir()):
        channel = _LABEL_FILE.match(label_file.name)
        label = _text(label_file) if channel else None
        if channel and label in KNOWN_RAILS:
            n = channel.group(1)
            rails.append(Rail(label, chip / f"in{n}_input", chip / f"curr{n}_input"))
    return rails


def find_rails(sysfs_root: str) -> list[Rail]:
    """The known rails of every INA3221 under <sysfs_root>/class/hwmon; raises Unavailable with why not."""
    hwmon = Path(sysfs_root) / "class" / "hwmon"
    if not hwmon.is_dir():
        raise Unavailable(f"no hwmon directory at {hwmon}")
    chips = [d for d in sorted(hwmon.iterdir()) if _text(d / "name") == CHIP_NAME]
    if not chips:
        raise Unavailable(f"no INA3221 power monitor under {hwmon} (not a Jetson, or its driver is not loaded)")
    rails: dict[str, Rail] = {}
    for chip in chips:
        try:
            chip_rails = _chip_rails(chip)
        except OSError:  # a chip directory we may not list: its rails stay unknown
            continue
        for rail in chip_rails:
            rails.setdefault(rail.label, rail)  # a label twice would count one supply twice
    if not rails:
        raise Unavailable(f"the INA3221 at {', '.join(c.name for c in chips)} has none of the known rails "
                          f"({', '.join(sorted(KNOWN_RAILS))})")
    return list(rails.values())


class Ina3221Source(PowerSource):
    """power_w is the board input rail (VDD_IN) where one is labelled (Orin NX / Nano), else the sum of
    the known rails (AGX Orin). The total is None when a rail it needs could not be read, rather than
    a smaller number; a reading's `rails` holds every rail that could be read, in W."""

    name = "ina3221"

    def __init__(self, rails: list[Rail]) -> None:
        super().__init__()
        self.rails = rails
        self.summed = not any(r.label == BOARD_INPUT_RAIL for r in rails)

    def _total(self, rails: dict[str, float]) -> Optional[float]:
        if not self.summed:
            return rails.get(BOARD_INPUT_RAIL)
        return sum(rails.values()) if len(rails) == len(self.rails) else None

    def _read(self) -> PowerReading:
        watts = {rail.label: rail.watts() for rail in self.rails}
        rails = {label: w for label, w in watts.items() if w is not None}
        return PowerReading(t=time.time(), power_w=self._total(rails), rails=rails)

    def read_total(self) -> PowerReading:
        """The board input rail alone where there is one: 2 files instead of 6, each an I2C transfer on a board."""
        if self.summed:
            return self.read_power()
        board = next(rail for rail in self.rails if rail.label == BOARD_INPUT_RAIL)
        return PowerReading(t=time.time(), power_w=board.watts())


def open_source(config: TelemetryConfig) -> Ina3221Source:
    source = Ina3221Source(find_rails(config.sysfs_root))
    if source.read().power_w is None:
        labels = ", ".join(sorted(r.label for r in source.rails))
        raise Unavailable(f"INA3221 rails {labels} are not readable (voltage or current file)")
    return source

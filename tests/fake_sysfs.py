"""Fake sysfs trees of real files, for power sources read through EDGED_SYSFS_ROOT: powercap laid out like
/sys/class/powercap on an x86 host, and INA3221 hwmon devices laid out like a Jetson's (device directories,
/sys/class/hwmon/hwmonN links to them). The telemetry tests and the daemon tests of task serving share them."""

from __future__ import annotations

import os
from pathlib import Path

MAX_RANGE_UJ = 262_143_328_850  # a real package's max_energy_range_uj


class FakeRapl:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.powercap = root / "class" / "powercap"

    def add_zone(self, zone: str, name: str, energy_uj: int, max_range_uj: int = MAX_RANGE_UJ) -> Path:
        d = self.powercap / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        (d / "energy_uj").write_text(f"{energy_uj}\n")
        return d

    def set_energy(self, zone: str, energy_uj: int) -> None:
        (self.powercap / zone / "energy_uj").write_text(f"{energy_uj}\n")

    def add_energy(self, zone: str, delta_uj: int) -> None:
        path = self.powercap / zone / "energy_uj"
        now = int(path.read_text())
        max_range = int((self.powercap / zone / "max_energy_range_uj").read_text())
        path.write_text(f"{(now + delta_uj) % max_range}\n")


class FakeIna3221:
    """INA3221 chips as the mainline hwmon driver lays them out; `hwmon_index` is where the link goes."""

    # The boards' INA3221 channels, (label, mV, mA) for channels 1..3 of each chip (by I2C address).
    ORIN_NX = {"1-0040": [("VDD_IN", 5072, 1420), ("VDD_CPU_GPU_CV", 5056, 396), ("VDD_SOC", 5064, 316)]}
    AGX_ORIN = {
        "1-0040": [("VDD_GPU_SOC", 19_960, 380), ("VDD_CPU_CV", 19_952, 156), ("VIN_SYS_5V0", 4_976, 620)],
        "1-0041": [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 4_992, 96), ("NC", 0, 0)],
    }

    @staticmethod
    def watts(chips: dict[str, list[tuple[str, int, int]]]) -> dict[str, float]:
        """label -> mV * mA / 1e6 of every connected channel (not NC)."""
        return {label: mv * ma / 1e6 for channels in chips.values() for label, mv, ma in channels if label != "NC"}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.class_hwmon = root / "class" / "hwmon"
        self.chips: dict[str, Path] = {}  # I2C address -> the chip's hwmon directory

    def add_device(self, hwmon_index: int, name: str, address: str, channels: list[tuple[str, int, int]]) -> Path:
        i2c_bus = self.root / "devices" / "platform" / "bus@0" / "c240000.i2c" / "i2c-1"
        chip = i2c_bus / address / "hwmon" / f"hwmon{hwmon_index}"
        chip.mkdir(parents=True)
        (chip / "name").write_text(name + "\n")
        for n, (label, millivolts, milliamps) in enumerate(channels, start=1):
            (chip / f"in{n}_label").write_text(label + "\n")
            (chip / f"in{n}_input").write_text(f"{millivolts}\n")
            (chip / f"curr{n}_input").write_text(f"{milliamps}\n")
            (chip / f"shunt{n}_resistor").write_text("5000\n")
        (chip / "in7_label").write_text("sum of shunt voltages\n")
        (chip / "in7_input").write_text("1440\n")
        self.class_hwmon.mkdir(parents=True, exist_ok=True)
        (self.class_hwmon / f"hwmon{hwmon_index}").symlink_to(chip)
        self.chips[address] = chip
        return chip

    def add_board(self, chips: dict[str, list[tuple[str, int, int]]], first_index: int = 1) -> None:
        for i, (address, channels) in enumerate(chips.items()):
            self.add_device(first_index + i, "ina3221", address, channels)

    def channel_file(self, label: str, kind: str) -> Path:
        """kind "in" (mV) or "curr" (mA): the file of the channel labelled `label`."""
        for chip in self.chips.values():
            for label_file in chip.glob("in*_label"):
                if label_file.read_text().strip() == label:
                    return chip / label_file.name.replace("in", kind, 1).replace("_label", "_input")
        raise KeyError(label)

    def set_current(self, label: str, milliamps: int) -> None:
        path = self.channel_file(label, "curr")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{milliamps}\n")
        os.replace(tmp, path)  # a reader never sees a half-written file

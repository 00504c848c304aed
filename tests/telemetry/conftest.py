"""A fake powercap sysfs tree: real files, laid out like /sys/class/powercap on an x86 host."""

from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.fixture
def fake_rapl(tmp_path: Path) -> FakeRapl:
    return FakeRapl(tmp_path / "sys")

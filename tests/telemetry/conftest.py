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


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A migrated edged database on tmp_path (the real store and its migrations)."""
    from edged.store.db import migrate, open_db

    path = tmp_path / "edged.db"
    db = open_db(path)
    migrate(db)
    db.close()
    return path


@pytest.fixture
def insert_job():
    """insert_job(db, job_id, state, **columns): a jobs row with the required columns filled in."""
    from edged.store.db import utc_now

    def insert(db, job_id: str, state: str, **fields) -> None:
        row = {"id": job_id, "state": state, "model": "mobilenet_v2", "method": "taskedge", "created_at": utc_now()}
        db["jobs"].insert({**row, **fields})

    return insert

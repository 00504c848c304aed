"""Telemetry fixtures: the fake sysfs trees of tests/fake_sysfs.py on tmp_path, a migrated database, jobs rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_sysfs import FakeIna3221, FakeRapl


@pytest.fixture
def fake_rapl(tmp_path: Path) -> FakeRapl:
    return FakeRapl(tmp_path / "sys")


@pytest.fixture
def fake_ina3221(tmp_path: Path) -> FakeIna3221:
    return FakeIna3221(tmp_path / "sys")


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

import json
import time

import pytest

from edged.jobs import records
from edged.store.db import open_db
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.reading import PowerSource
from edged.telemetry.sampler import Sampler
from edged.telemetry.sources import open_named_source


def _rapl_sampler(fake_rapl, db_path, **config):
    fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    cfg = TelemetryConfig(power_source="rapl", sysfs_root=str(fake_rapl.root), **config)
    return Sampler(db_path, open_named_source("rapl", cfg), cfg)


def test_rows_carry_interval_energy_that_sums_to_the_counter(fake_rapl, db_path):
    sampler = _rapl_sampler(fake_rapl, db_path)
    sampler.sample_once()
    for delta_uj in (1_000_000, 2_500_000, 500_000):
        fake_rapl.add_energy("intel-rapl:0", delta_uj)
        sampler.sample_once()
    sampler.stop()
    db = open_db(db_path)
    rows = list(db["telemetry_samples"].rows_where(order_by="id"))
    assert rows[0]["energy_j"] is None  # nothing to integrate before the second reading
    assert [r["energy_j"] for r in rows[1:]] == pytest.approx([1.0, 2.5, 0.5])
    assert sampler.energy_total_j == pytest.approx(4.0)
    assert all(r["source"] == "rapl" and json.loads(r["rails"]).keys() == {"package-0"} for r in rows[1:])


def test_retention_prunes_the_oldest_rows(db_path):
    config = TelemetryConfig(power_source="none", retention_rows=5)
    sampler = Sampler(db_path, PowerSource(), config)
    ids = [sampler.sample_once()["id"] for _ in range(12)]
    sampler.stop()
    db = open_db(db_path)
    kept = [r["id"] for r in db["telemetry_samples"].rows_where(order_by="id")]
    assert kept == ids[-5:]


def test_rows_are_tagged_with_the_running_job(db_path, insert_job):
    db = open_db(db_path)
    sampler = Sampler(db_path, PowerSource(), TelemetryConfig(power_source="none"), records.running_job_id)
    assert sampler.sample_once()["job_id"] is None
    insert_job(db, "job-1", "running", started_at="2026-01-01T00:00:00Z")
    assert sampler.sample_once()["job_id"] == "job-1"
    sampler.set_active("job-2")  # explicit beats the table
    assert sampler.sample_once()["job_id"] == "job-2"
    sampler.set_active(None)
    db["jobs"].update("job-1", {"state": "succeeded"})
    assert sampler.sample_once()["job_id"] is None
    sampler.stop()


def test_thread_samples_faster_while_a_job_runs(db_path):
    config = TelemetryConfig(power_source="none", active_interval_s=0.05, idle_interval_s=30.0)
    sampler = Sampler(db_path, PowerSource(), config)
    db = open_db(db_path)
    sampler.start()
    _wait_until(lambda: db["telemetry_samples"].count >= 1)  # the first sample, at start
    time.sleep(0.3)
    idle_count = db["telemetry_samples"].count  # idle: the next one is 30 s away
    sampler.set_active("job-9")  # wakes the thread at once
    active = "SELECT count(*) FROM telemetry_samples WHERE job_id = 'job-9'"
    # 4 samples long before the idle period could give 2: the thread follows the active interval (even on a
    # loaded box, where a fixed sleep would count scheduling delays instead)
    _wait_until(lambda: db.execute(active).fetchone()[0] >= 4)
    sampler.stop()
    assert idle_count == 1


def _wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_lasting_failure_is_logged_once_not_every_tick(db_path, caplog):
    """A full or broken database must not flood the log of a board nobody watches (one traceback per second)."""
    sampler = Sampler(db_path, PowerSource(), TelemetryConfig(power_source="none", active_interval_s=0.4, idle_interval_s=0.4))
    sampler.sample_once()
    open_db(db_path).execute("DROP TABLE telemetry_samples")  # every insert fails the same way from now on
    with caplog.at_level("ERROR", logger="edged.telemetry.sampler"):
        sampler.start()
        time.sleep(2.2)  # about five ticks
        sampler.stop()
    failures = [r for r in caplog.records if "telemetry sample failed" in r.getMessage()]
    assert len(failures) == 1

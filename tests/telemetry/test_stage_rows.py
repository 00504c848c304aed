import time

import pytest

from edged.store.db import open_db
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.sources import open_named_source
from edged.pipeline.timer import StageTimer
from edged.telemetry.reading import PowerSource
from edged.telemetry.stages import stage_recorder, stage_rows


def _timer(db, job_id: str, source) -> StageTimer:
    """The job's wiring (edged.jobs.execute): the pipeline's one stage timer writing this table."""
    return StageTimer(None, source, stage_recorder(db, job_id, source.name))


def test_recorded_stages_land_in_the_table_in_order(fake_rapl, db_path, insert_job):
    fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    source = open_named_source("rapl", TelemetryConfig(sysfs_root=str(fake_rapl.root)))
    db = open_db(db_path)
    insert_job(db, "j1", "running")
    timer = _timer(db, "j1", source)
    with timer.stage("calibrate"):
        fake_rapl.add_energy("intel-rapl:0", 1_500_000)
    with timer.stage("train") as stage:
        time.sleep(0.2)
        fake_rapl.add_energy("intel-rapl:0", 4_000_000)
        stage.items = 640
    rows = stage_rows(db, "j1")
    assert [r["stage"] for r in rows] == ["calibrate", "train"]
    assert rows[0]["energy_j"] == pytest.approx(1.5) and rows[1]["energy_j"] == pytest.approx(4.0)
    assert rows[1]["items_per_s"] == pytest.approx(640 / rows[1]["wall_s"])
    assert rows[0]["items"] is None and rows[0]["energy_method"] == "counter"


def test_a_failing_stage_is_still_recorded_and_reraises(db_path, insert_job):
    db = open_db(db_path)
    insert_job(db, "j2", "running")
    with pytest.raises(RuntimeError, match="out of memory"):
        with _timer(db, "j2", PowerSource()).stage("train"):
            raise RuntimeError("out of memory")
    (row,) = stage_rows(db, "j2")
    assert row["energy_j"] is None and row["source"] == "none" and row["wall_s"] >= 0


def test_rows_go_with_their_job(db_path, insert_job):
    db = open_db(db_path)
    insert_job(db, "j3", "succeeded")
    with _timer(db, "j3", PowerSource()).stage("export"):
        pass
    db["jobs"].delete("j3")
    assert stage_rows(db, "j3") == []

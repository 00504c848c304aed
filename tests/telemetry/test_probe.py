import json

from edged.store.db import open_db
from edged.telemetry import probe


def test_probe_records_every_stage_and_the_latency(tmp_path, capsys):
    db_path = tmp_path / "probe.db"
    probe.main([str(db_path), "--power-source", "none", "--width", "64", "--depth", "1",
                "--batch", "8", "--steps", "8", "--iters", "20"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["stage"] for s in report["stages"]] == ["calibrate", "train", "prune", "benchmark"]
    assert report["stages"][1]["items"] == 8 * 8
    assert report["latency"]["dense"]["iters"] == 20
    db = open_db(db_path)
    (job,) = list(db["jobs"].rows)
    assert job["state"] == "succeeded" and json.loads(job["metrics"])["latency"]["dense"]["p50_ms"] > 0
    assert db["telemetry_samples"].count >= 1

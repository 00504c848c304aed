"""A real job, run by the app and its worker process, on a Jetson-like machine whose only power source is
an INA3221: the daemon's sysfs root holds a fake Orin NX tree whose board input draws a constant 2 W, so
each stage's recorded joules (trapezoid over the sampled power) can be checked against its wall time."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jobs_helpers import FAST_JOB, upload, wait_for
from edged.api.app import create_app
from edged.jobs.states import FINAL_STATES
from edged.store.db import open_db
from edged.telemetry.stages import stage_rows

JOB_TESTS = Path(__file__).resolve().parents[1] / "jobs"
MILLIVOLTS, MILLIAMPS = 5000, 400
POWER_W = MILLIVOLTS * MILLIAMPS / 1e6


@pytest.fixture
def ina3221_client(fake_ina3221, settings, monkeypatch, test_model_module):
    monkeypatch.setenv("PYTHONPATH", str(JOB_TESTS))  # the worker process imports the test model from there
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    fake_ina3221.add_device(2, "ina3221", "1-0040",
                            [("VDD_IN", MILLIVOLTS, MILLIAMPS), ("VDD_CPU_GPU_CV", 5000, 100), ("VDD_SOC", 5000, 60)])
    # named, not `auto`: on a real Jetson with the jtop service, `auto` would take jtop
    jetson_settings = settings.model_copy(update={"sysfs_root": fake_ina3221.root, "power_source": "ina3221"})
    with TestClient(create_app(jetson_settings)) as client:
        yield client


def test_a_job_records_energy_per_stage_from_the_ina3221(ina3221_client, auth):
    client = ina3221_client
    response = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": upload(client, auth)})
    assert response.status_code == 202, response.text
    job = wait_for(lambda: client.get(f"/v1/jobs/{response.json()['id']}", headers=auth).json(),
                   lambda j: j["state"] in FINAL_STATES, timeout_s=120)
    assert job["state"] == "succeeded", job

    db = open_db(client.app.state.settings.db_path)
    try:
        rows = stage_rows(db, job["id"])
        samples = list(db.query("SELECT source, power_w, rails FROM telemetry_samples"))
    finally:
        db.close()
    assert rows and all(r["source"] == "ina3221" and r["energy_method"] == "trapezoid" for r in rows)
    for r in rows:  # constant power: the integral is exact up to the moments before the first and after the last read
        assert r["energy_j"] == pytest.approx(POWER_W * r["wall_s"], rel=0.02, abs=0.1), r["stage"]
    train = next(r for r in rows if r["stage"] == "train")  # seconds long: the 2 % alone must hold
    assert train["energy_j"] == pytest.approx(POWER_W * train["wall_s"], rel=0.02)
    assert job["metrics"]["latency"]["dense"]["energy_method"] == "trapezoid"
    # the daemon's sampler reads the same rails
    assert samples and all(s["source"] == "ina3221" and s["power_w"] == pytest.approx(POWER_W) for s in samples)
    assert all("VDD_SOC" in s["rails"] for s in samples)

import json
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from edged.api.app import create_app
from edged.settings import get_settings
from edged.store.db import open_db, utc_now

TOKEN = "telemetry-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path):
    return get_settings(data_dir=tmp_path / "data", token=TOKEN, sysfs_root=tmp_path / "no-sys")


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def _insert_samples(db, rows):
    for r in rows:
        db["telemetry_samples"].insert({"source": "rapl", "rails": json.dumps(r.pop("rails", {})), **r})


def test_range_metrics_and_job_filters(client, settings):
    db = open_db(settings.db_path)
    db["jobs"].insert({"id": "j1", "state": "succeeded", "model": "m", "method": "taskedge", "created_at": utc_now()})
    _insert_samples(db, [
        {"ts": 1000.0, "job_id": None, "power_w": 10.0, "energy_j": 5.0, "rails": {"package-0": 10.0}},
        {"ts": 1001.0, "job_id": "j1", "power_w": 30.0, "energy_j": 20.0},
        {"ts": 1002.0, "job_id": "j1", "power_w": 50.0, "energy_j": 40.0},
        {"ts": 1003.0, "job_id": None, "power_w": 12.0, "energy_j": 11.0},
    ])
    body = client.get("/v1/telemetry?since=1000&until=1002.5&metrics=power_w,rails", headers=AUTH).json()
    assert [s["ts"] for s in body["samples"]] == [1000.0, 1001.0, 1002.0]
    assert set(body["samples"][0]) == {"ts", "job_id", "power_w", "rails"}
    assert body["samples"][0]["rails"] == {"package-0": 10.0}
    assert body["energy_j"] == pytest.approx(65.0) and body["count"] == 3
    job = client.get("/v1/telemetry?job_id=j1", headers=AUTH).json()
    assert [s["power_w"] for s in job["samples"]] == [30.0, 50.0]
    assert job["energy_j"] == pytest.approx(60.0)
    assert job["stages"] == []


def test_the_daemons_sampler_tags_its_samples_with_the_running_job(client, settings):
    """The app hands its sampler the job queue's running job: a job's samples come back by its id."""
    db = open_db(settings.db_path)
    db["jobs"].insert({"id": "j-run", "state": "running", "model": "m", "method": "taskedge",
                       "created_at": utc_now(), "started_at": utc_now()})  # as a worker's claim leaves it
    assert client.app.state.sampler.sample_once()["job_id"] == "j-run"
    body = client.get("/v1/telemetry?job_id=j-run", headers=AUTH).json()
    assert body["count"] >= 1 and {s["job_id"] for s in body["samples"]} == {"j-run"}


def test_long_ranges_are_bucketed_with_energy_preserved(client, settings):
    db = open_db(settings.db_path)
    _insert_samples(db, [{"ts": 2000.0 + i, "power_w": float(i % 2) * 10, "energy_j": 1.0} for i in range(100)])
    body = client.get("/v1/telemetry?since=2000&until=2100&max_points=10", headers=AUTH).json()
    assert body["bucket_s"] == pytest.approx(10.0)
    assert len(body["samples"]) == 10
    assert sum(s["energy_j"] for s in body["samples"]) == pytest.approx(100.0)
    assert all(s["power_w"] == pytest.approx(5.0) for s in body["samples"])


@pytest.mark.parametrize("query, fragment", [
    ("metrics=volts", "accepted: power_w"),
    ("since=10&until=5", "after until"),
])
def test_bad_queries_name_what_is_accepted(client, query, fragment):
    resp = client.get(f"/v1/telemetry?{query}", headers=AUTH)
    assert resp.status_code == 422
    assert fragment in resp.json()["error"]["message"]


def test_routes_need_the_token(client):
    assert client.get("/v1/telemetry").status_code == 401
    assert client.get("/metrics").status_code == 401


def test_the_daemon_samples_and_metrics_parse_as_prometheus(client, settings):
    deadline = time.time() + 5
    while time.time() < deadline:  # the lifespan started the sampler: its first row comes at once
        body = client.get("/v1/telemetry", headers=AUTH).json()
        if body["count"]:
            break
        time.sleep(0.05)
    assert body["count"] >= 1 and body["source"] in ("jtop", "ina3221", "nvml", "rapl", "none")
    resp = client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert {"edged_power_watts", "edged_energy_joules", "edged_jobs", "edged_memory_used_bytes"} <= set(families)
    states = {s.labels["state"]: s.value for s in families["edged_jobs"].samples}
    assert states["running"] == 0 and "succeeded" in states
    stamp = families["edged_telemetry_last_sample_timestamp_seconds"].samples
    assert stamp and abs(stamp[0].value - time.time()) < 60

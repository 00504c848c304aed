"""The dashboard: its data route (seeded rows, and a real job run by a worker on a machine without a power
source), and the page in a real headless Chromium (Debian's `chromium`, driven by Playwright)."""

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from edged.api.app import create_app
from edged.api.jobs_view import JOB_COLUMNS
from edged.client import parse_sse
from edged.jobs.states import FINAL_STATES
from edged.settings import get_settings
from edged.store.db import open_db, utc_now

from suite_settings import TEST_FACTORIES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "dashboard-test-token-0123456789"
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """edged served by uvicorn on a free local port, in a thread, sampling host statistics only (no power
    source, as on a board without one); yields (base_url, settings)."""
    settings = get_settings(data_dir=tmp_path / "data", token=TOKEN, sysfs_root=tmp_path / "no-sys", power_source="none")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", settings
    srv.should_exit = True
    thread.join(10)


def _latency(p50: float) -> dict:
    return {"p50_ms": p50, "p95_ms": p50 * 1.2, "p99_ms": p50 * 1.4, "mean_ms": p50 * 1.05,
            "throughput_per_s": 1000 / p50, "iters": 200, "batch_size": 1,
            "energy_per_inference_j": None, "energy_method": None, "device": "cpu"}


# job-7f3a's epochs as the training loop reports them (epoch from 0, mean train loss, validation accuracy 0..1)
EPOCHS = [(0, 1.912, 0.4125), (1, 0.8731, 0.7375), (2, 0.5208, 0.8625), (3, 0.4417, 0.8875)]
TEMPS = [48.0 + i / 4 for i in range(120)]  # 48 .. 77.75 degC over the ten minutes


def _seed(db) -> None:
    """A finished job with real-looking numbers, its epochs and stage telemetry, the running job's first
    epoch, and ten minutes of samples: power, utilisation, memory and temperature."""
    metrics = {"accuracy_before": 0.713, "accuracy_after": 0.889, "trainable_fraction": 0.00085,
               "latency": {"dense": _latency(4.20), "sparse_2_4": _latency(2.90)}}
    db["jobs"].insert({"id": "job-7f3a", "state": "succeeded", "stage": "benchmark", "progress": 1.0,
                       "model": "mobilenet_v2", "method": "taskedge", "metrics": json.dumps(metrics),
                       "created_at": utc_now(), "started_at": utc_now(), "finished_at": utc_now()})
    db["jobs"].insert({"id": "job-8c21", "state": "running", "stage": "train", "progress": 0.25,
                       "model": "minilm", "method": "magnitude", "created_at": utc_now(), "started_at": utc_now()})
    for stage, wall, joules in [("calibrate", 3.2, 41.0), ("train", 48.5, 902.5), ("benchmark", 6.1, 80.2)]:
        db["job_stage_telemetry"].insert({"job_id": "job-7f3a", "stage": stage, "started_at": time.time(),
                                          "wall_s": wall, "energy_j": joules, "source": "nvml"})
    now = time.time()
    watts = [60.0 + (180.0 if 40 < i < 100 else 0.0) + (i % 7) for i in range(120)]  # idle, a job, idle
    rows = [{"ts": now - 600 + 5 * i, "job_id": "job-7f3a" if 40 < i < 100 else None, "source": "nvml",
             "power_w": w, "energy_j": 5 * w, "rails": json.dumps({"gpu0": w}), "cpu_util_pct": 12.0 + i % 5,
             "gpu_util_pct": 95.0 if 40 < i < 100 else 0.0, "mem_used_mb": 3100.0 + i, "temp_c": TEMPS[i]}
            for i, w in enumerate(watts)]
    db["telemetry_samples"].insert_all(rows)
    for epoch, loss, accuracy in EPOCHS:
        db["job_events"].insert({"job_id": "job-7f3a", "ts": now, "type": "epoch", "stage": "train", "data": json.dumps(
            {"epoch": epoch, "train_loss": loss, "val_accuracy": accuracy, "samples_per_s": 310.0})})
    db["job_events"].insert({"job_id": "job-8c21", "ts": now, "type": "epoch", "stage": "train", "data": json.dumps(
        {"epoch": 0, "train_loss": 2.2, "val_accuracy": 0.31, "samples_per_s": 120.0})})


def test_dashboard_data_lists_jobs_newest_first_with_metrics_and_stage_telemetry(tmp_path):
    settings = get_settings(data_dir=tmp_path / "data", token=TOKEN, sysfs_root=tmp_path / "no-sys")
    with TestClient(create_app(settings)) as client:
        _seed(open_db(settings.db_path))
        data = client.get("/dashboard/data", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    running, finished = data["jobs"]  # job-8c21 was submitted after job-7f3a
    assert (running["id"], finished["id"]) == ("job-8c21", "job-7f3a")
    assert set(finished) == {*JOB_COLUMNS, "stages"}  # no config, worker pid or dataset: what the page shows
    assert finished["metrics"]["latency"]["sparse_2_4"]["p50_ms"] == 2.90 and running["metrics"] == {}
    assert [s["stage"] for s in finished["stages"]] == ["calibrate", "train", "benchmark"]
    assert sum(s["energy_j"] for s in finished["stages"]) == pytest.approx(1023.7) and running["stages"] == []
    assert data["training"] == {"job_id": "job-8c21", "epochs": [{"epoch": 0, "train_loss": 2.2, "val_accuracy": 0.31}]}
    sampled = [s["temp_c"] for s in data["telemetry"]["samples"]]  # with the daemon's own rows (no sensor: None)
    assert [t for t in sampled if t is not None] == TEMPS  # the last 15 min, as stored
    assert data["telemetry"]["bucket_s"] is None


def test_dashboard_data_draws_a_chosen_job_and_bounds_its_window(tmp_path):
    settings = get_settings(data_dir=tmp_path / "data", token=TOKEN, sysfs_root=tmp_path / "no-sys")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings)) as client:
        _seed(open_db(settings.db_path))
        chosen = client.get("/dashboard/data", params={"job": "job-7f3a", "window_s": 302.5}, headers=auth).json()
        assert [(e["epoch"], e["train_loss"], e["val_accuracy"]) for e in chosen["training"]["epochs"]] == EPOCHS
        sampled = [s["temp_c"] for s in chosen["telemetry"]["samples"] if s["temp_c"] is not None]
        assert sampled == TEMPS[-60:]  # seeded every 5 s: the rows of the last 300 s
        unknown = client.get("/dashboard/data", params={"job": "job-gone"}, headers=auth)
        assert unknown.status_code == 404 and "job-gone" in unknown.json()["error"]["message"]
        too_long = client.get("/dashboard/data", params={"window_s": 8 * 86400}, headers=auth)
        assert too_long.status_code == 422


def test_dashboard_data_of_a_real_job_without_a_power_source(tmp_path, monkeypatch, uploads, digits_task,
                                                            test_model_module):
    """A worker trains three epochs while the sampler reads only host statistics (power source `none`):
    the route returns the epochs the job reported and CPU and memory series, with no power."""
    from jobs_helpers import FAST_JOB, wait_for  # on sys.path through test_model_module

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1] / "jobs"))  # the worker imports the test model
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = get_settings(data_dir=tmp_path / "data", token=TOKEN, model_factories=TEST_FACTORIES,
                            power_source="none", telemetry_interval_s=0.5)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings)) as client:
        npz = uploads.npz(x=digits_task.x.numpy()[:300, 0], y=digits_task.y.numpy()[:300])
        dataset = client.post("/v1/datasets", headers=auth, files={"file": ("digits.npz", npz)}).json()["id"]
        submitted = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset, "epochs": 3})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        job = wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth).json(),
                       lambda j: j["state"] in FINAL_STATES, timeout_s=180)
        assert job["state"] == "succeeded", job
        # Two host samples make a line; the idle sampler ticks every 5 s (a job this short may fall between ticks).
        data = wait_for(lambda: client.get("/dashboard/data", headers=auth).json(),
                        lambda d: len(d["telemetry"]["samples"]) >= 2, timeout_s=15)
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth) as response:
            reported = [event for kind, event in parse_sse(response.iter_lines()) if kind == "epoch"]
    assert data["source"] == "none" and data["training"]["job_id"] == job_id
    assert len(data["training"]["epochs"]) == job["metrics"]["epochs_run"] == 3
    assert data["training"]["epochs"] == [{key: e[key] for key in ("epoch", "train_loss", "val_accuracy")}
                                          for e in reported]
    samples = data["telemetry"]["samples"]
    assert all(s["cpu_util_pct"] is not None and s["mem_used_mb"] > 0 for s in samples)
    assert all(s["power_w"] is None and s["energy_j"] is None for s in samples)


@needs_chromium
def test_dashboard_shows_a_finished_job_draws_charts_and_updates_live(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, settings = server
    db = open_db(settings.db_path)
    _seed(db)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900},
                                    extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
            failed = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(f"{base}/dashboard")
            page.wait_for_selector("body[data-loaded='1']", timeout=15000)
            row = page.locator("tr[data-job='job-7f3a']")
            assert "71.3% → 88.9%" in row.inner_text()
            assert "0.085%" in row.inner_text()
            assert "1023.7 J" in row.inner_text()  # 41.0 + 902.5 + 80.2 over its stages
            assert page.locator("#power-chart svg path.series").count() == 1
            assert page.locator("#energy-chart svg path.series").count() == 1
            assert page.locator("#latency-chart svg rect.bar").count() == 2
            assert "4.2 ms dense" in page.locator("#latency-chart").inner_text()
            assert "2.9 ms sparse_2_4" in page.locator("#latency-chart").inner_text()
            _check_epochs_and_host_charts(page)

            db["jobs"].update("job-8c21", {"progress": 0.75})  # a running job: the page polls every 2 s
            page.wait_for_function(
                "document.querySelector(\"tr[data-job='job-8c21'] progress\").value === 0.75", timeout=8000
            )
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert failed == []  # every asset served locally, nothing fetched from elsewhere
        finally:
            browser.close()


def _vertices(page, selector: str) -> int:
    return sum(page.get_attribute(selector, "d").count(c) for c in "ML")


def _check_epochs_and_host_charts(page) -> None:
    """The newest job's epochs are drawn; clicking a row draws that job's, point for point as stored. Host
    series from the seeded rows (the daemon's own `none` rows have no GPU or temperature values)."""
    assert page.inner_text("#training-job") == "job-8c21"
    assert page.locator("#loss-chart circle.point").count() == 1
    page.click("tr[data-job='job-7f3a']")
    page.wait_for_function("document.querySelector('#training-job').textContent === 'job-7f3a'", timeout=8000)
    assert "selected" in page.get_attribute("tr[data-job='job-7f3a']", "class")
    losses = page.eval_on_selector_all("#loss-chart circle.point", "els => els.map(e => [+e.dataset.x, +e.dataset.y])")
    assert losses == [[epoch, loss] for epoch, loss, _ in EPOCHS]
    accuracies = page.eval_on_selector_all("#accuracy-chart circle.point", "els => els.map(e => +e.dataset.y)")
    assert accuracies == pytest.approx([100 * accuracy for _, _, accuracy in EPOCHS])
    assert page.locator("#loss-chart path.series.loss").count() == 1
    assert _vertices(page, "#util-chart path.series.gpu") == len(TEMPS)  # every seeded row, none of the daemon's
    assert page.locator("#util-chart path.series.cpu").count() == 1
    assert page.locator("#memory-chart path.series.memory").count() == 1
    assert _vertices(page, "#temp-chart path.series.temp") == len(TEMPS)
    assert page.locator("#temp-chart text.tick", has_text="80").count() == 1  # axis up to the 77.75 degC peak


@contextmanager
def _dashboard(base: str) -> Iterator[Any]:
    """The dashboard page in headless Chromium, with the token, once its first data has been drawn."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900},
                                    extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
            page.goto(f"{base}/dashboard")
            page.wait_for_selector("body[data-loaded='1']", timeout=15000)
            yield page
        finally:
            browser.close()


@needs_chromium
def test_page_on_a_machine_without_a_power_source_draws_host_statistics(server, tmp_path):
    """No seeded rows: only what the daemon's sampler read. CPU and memory are drawn; power, GPU, temperature
    and epochs say that there is nothing to draw."""
    base, settings = server
    db = open_db(settings.db_path)
    deadline = time.time() + 15  # the idle sampler ticks at start, then every 5 s; a line needs two
    while db["telemetry_samples"].count < 2 and time.time() < deadline:
        time.sleep(0.2)
    with _dashboard(base) as page:
        assert page.inner_text("#source") == "none"
        assert _vertices(page, "#util-chart path.series.cpu") >= 2
        assert _vertices(page, "#memory-chart path.series.memory") >= 2
        assert page.text_content("#util-chart .legend.missing") == "GPU: no data"  # SVG text: no inner_text
        assert "no temperature" in page.inner_text("#temp-chart")
        assert "no power source" in page.inner_text("#power-chart")
        assert "no power source" in page.inner_text("#energy-chart")
        assert "no epoch" in page.inner_text("#loss-chart") and page.inner_text("#training-job") == "–"
        page.screenshot(path=str(tmp_path / "no-power.png"), full_page=True)


@needs_chromium
def test_the_tasks_panel_shows_each_tasks_requests_latency_and_switches(server, tmp_path):
    """Two published tasks and their serving minutes, as the task server writes them: the panel's rows carry
    the stored totals and the latest minute's latency."""
    base, settings = server
    db = open_db(settings.db_path)
    minute = int(time.time() // 60 * 60)
    for task_id, classes, minutes in [("task-digits", 10, [(minute - 60, 40, 3.1, 9.5, 7), (minute, 25, 2.4, 6.0, 5)]),
                                      ("task-parity", 2, [])]:
        db["tasks"].insert({"id": task_id, "job_id": None, "base_model": "mobilenet_v2", "kind": "image",
                            "model_options": "{}", "seed": 0, "method": "taskedge", "sparsity": "none",
                            "classes": json.dumps([str(i) for i in range(classes)]), "delta_blob": "0" * 64,
                            "delta_bytes": 123, "created_at": utc_now()})
        for at, requests, p50, p99, switches in minutes:
            db["task_minutes"].insert({"task_id": task_id, "minute": at, "requests": requests, "samples": 2 * requests,
                                       "p50_ms": p50, "p95_ms": p99 * 0.9, "p99_ms": p99, "switches": switches,
                                       "switch_ms_mean": 0.05})
    with _dashboard(base) as page:
        digits = [c.inner_text() for c in page.locator("tr[data-task='task-digits'] td").all()]
        assert digits == ["task-digits", "mobilenet_v2 / taskedge", "10", "65", "130", "2.4 ms / 6.0 ms", "12"]
        parity = [c.inner_text() for c in page.locator("tr[data-task='task-parity'] td").all()]
        assert parity[2:] == ["2", "0", "0", "– / –", "0"]
        assert "0 switches; delta cache 0 hits / 0 misses" in page.inner_text("#serving")
        page.screenshot(path=str(tmp_path / "tasks.png"), full_page=True)


@needs_chromium
def test_page_without_token_asks_for_one(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, _ = server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_FLAGS)
        try:
            # The page and assets are fetched with the token; the data calls get it from the form.
            context = browser.new_context()
            context.route("**/dashboard**", lambda route: route.continue_(
                headers={**route.request.headers, "authorization": f"Bearer {TOKEN}"}
            ) if "/dashboard/data" not in route.request.url else route.continue_())
            page = context.new_page()
            page.goto(f"{base}/dashboard")
            page.wait_for_selector("#token-form.shown", timeout=10000)
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            page.wait_for_selector("body[data-loaded='1']", timeout=10000)
        finally:
            browser.close()

"""The dashboard: its data route, and the page in a real headless Chromium (Debian's `chromium`, driven by Playwright)."""

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from edged.api.app import create_app
from edged.api.jobs_view import JOB_COLUMNS
from edged.settings import get_settings
from edged.store.db import open_db, utc_now

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
    """edged served by uvicorn on a free local port, in a thread; yields (base_url, settings)."""
    settings = get_settings(data_dir=tmp_path / "data", token=TOKEN, sysfs_root=tmp_path / "no-sys")
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


def _seed(db) -> None:
    """A finished job with real-looking numbers, its stage telemetry, and ten minutes of power samples."""
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
             "power_w": w, "energy_j": 5 * w, "rails": json.dumps({"gpu0": w})} for i, w in enumerate(watts)]
    db["telemetry_samples"].insert_all(rows)


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

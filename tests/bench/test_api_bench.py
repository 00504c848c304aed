"""`edged bench api` end to end, briefly: a real daemon, a real training job, closed-loop clients and an
SSE follower. The JSON's structure is checked, not the timings (a benchmark is a program, not a test)."""

from __future__ import annotations

import json

from edged.bench.api import ROUTES
from edged.cli import main


def test_bench_api_writes_every_phase_route_and_the_sse_report(tmp_path, capsys):
    out = tmp_path / "api.json"
    assert main(["bench", "api", "--duration", "1", "--clients", "1,3", "--followers", "2", "--samples", "100",
                 "--data-dir", str(tmp_path / "data"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(p["phase"], p["clients"]) for p in result["phases"]] == [
        ("idle", 1), ("idle", 3), ("training", 1), ("training", 3)]
    for phase in result["phases"]:
        assert set(phase["routes"]) == set(ROUTES)
        for stats in [phase["all"], *phase["routes"].values()]:
            assert set(stats) == {"requests", "requests_per_s", "errors", "p50_ms", "p95_ms", "p99_ms"}
        assert phase["all"]["requests"] == sum(r["requests"] for r in phase["routes"].values()) > 0
    sse = result["sse"]
    assert sse["followers"] == 2 and len(sse["lost_per_follower"]) == 2 and sse["events"] > 0
    assert isinstance(sse["lost_events"], int) and isinstance(sse["errors"], list)
    assert "machine" in result and "requests/s" in capsys.readouterr().out

"""Per-task minute statistics: energy per inference from the measured requests only, and a restarted daemon's
rows adding to the minute its previous run wrote instead of replacing it (a kill -9 and restart within a minute
used to drop the earlier requests of that minute)."""

from __future__ import annotations

import pytest

from edged.tasks.serving_stats import ServingStats


def test_energy_per_inference_counts_the_measured_samples_only():
    stats = ServingStats()
    stats.request("a", 4, 0.010, energy_j=0.8)
    stats.request("a", 2, 0.020, energy_j=None)  # a read that failed: not zero joules
    stats.request("b", 3, 0.010)
    rows = {row["task_id"]: row for row in stats.rows()}
    assert rows["a"]["samples"] == 6 and rows["a"]["energy_j"] == pytest.approx(0.8)
    assert rows["a"]["energy_per_inference_j"] == pytest.approx(0.2)
    assert rows["b"]["energy_j"] is None and rows["b"]["energy_per_inference_j"] is None


def test_a_restart_within_a_minute_adds_to_its_earlier_row():
    first = ServingStats()
    for latency in (0.010, 0.030):
        first.request("a", 2, latency, energy_j=0.4)
    first.switch("a", 0.002)
    earlier = first.rows()
    restarted = ServingStats()
    restarted.resume(earlier)
    restarted.request("a", 1, 0.020, energy_j=0.1)
    restarted.switch("a", 0.004)
    [row] = restarted.rows()
    assert (row["requests"], row["samples"], row["switches"]) == (3, 5, 2)
    assert row["switch_ms_mean"] == pytest.approx(3.0)
    assert row["energy_j"] == pytest.approx(0.9) and row["energy_per_inference_j"] == pytest.approx(0.18)
    assert row["p50_ms"] == pytest.approx(20.0)  # the latencies since the restart


def test_an_earlier_row_without_energy_stays_without_it_until_measured():
    first = ServingStats()
    first.request("a", 2, 0.010)
    restarted = ServingStats()
    restarted.resume(first.rows())
    restarted.request("a", 2, 0.010)
    [row] = restarted.rows()
    assert row["requests"] == 2 and row["energy_j"] is None and row["energy_per_inference_j"] is None


def test_a_switch_is_counted_in_the_minute_of_the_requests_it_served():
    stats = ServingStats()
    batch_at = 1_000 * 60 + 59.9  # a micro-batch started at the end of a minute, answered in the next one
    stats.switch("a", 0.003, at=batch_at)
    stats.request("a", 2, 0.150, at=batch_at)
    [row] = stats.rows()
    assert row["minute"] == 1_000 * 60 and (row["requests"], row["switches"]) == (1, 1)
    assert row["p50_ms"] == pytest.approx(150.0)


def test_a_minute_with_switches_but_no_answered_request_has_no_percentiles():
    stats = ServingStats()
    stats.switch("a", 0.003)  # every input of its micro-batch was refused
    [row] = stats.rows()
    assert row["requests"] == 0 and row["switches"] == 1
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == (None, None, None)

"""GET /metrics in the Prometheus text format, built at scrape time from the sampler, the database, the job
counts the caller read (`edged.jobs.records.count_by_state`) and the task server's serving figures
(`edged.tasks.records.serving_totals` and `TaskServer.stats()`).

A fresh registry per scrape with one custom collector: no process-global metric objects, so
several apps (tests) in one process never collide. Base units per Prometheus convention.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Optional

import sqlite_utils
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edged.telemetry.sampler import Sampler

# telemetry_samples column -> (metric name, help, factor to base unit)
_GAUGES = {
    "power_w": ("edged_power_watts", "Total power the source sees (board input, GPUs or CPU packages).", 1.0),
    "gpu_util_pct": ("edged_gpu_utilization_percent", "GPU utilisation, mean over GPUs.", 1.0),
    "cpu_util_pct": ("edged_cpu_utilization_percent", "CPU utilisation over all cores.", 1.0),
    "mem_used_mb": ("edged_memory_used_bytes", "Host RAM in use.", float(2**20)),
    "temp_c": ("edged_temperature_celsius", "Hottest temperature the source reports.", 1.0),
}


class _TelemetryCollector(Collector):
    def __init__(self, db: sqlite_utils.Database, sampler: Optional[Sampler], jobs_by_state: dict[str, int],
                 tasks: list[dict[str, Any]], serving: dict[str, Any]) -> None:
        self._db, self._sampler, self._jobs_by_state = db, sampler, jobs_by_state
        self._tasks, self._serving = tasks, serving

    def _latest(self) -> Optional[dict[str, Any]]:
        if self._sampler is not None and self._sampler.latest is not None:
            return self._sampler.latest
        rows = list(self._db.query("SELECT * FROM telemetry_samples ORDER BY id DESC LIMIT 1"))
        return rows[0] if rows else None

    def collect(self) -> Iterator[Metric]:
        latest = self._latest()
        source = latest["source"] if latest else (self._sampler.source.name if self._sampler else "none")
        for column, (name, doc, factor) in _GAUGES.items():
            gauge = GaugeMetricFamily(name, doc, labels=["source"])
            if latest is not None and latest[column] is not None:
                gauge.add_metric([source], latest[column] * factor)
            yield gauge
        rails = GaugeMetricFamily("edged_rail_power_watts", "Power per rail / GPU / CPU package.", labels=["rail"])
        for rail, watts in (json.loads(latest["rails"]) if latest else {}).items():
            rails.add_metric([rail], watts)
        yield rails
        energy = CounterMetricFamily(
            "edged_energy_joules", "Energy measured since the daemon started.", labels=["source"]
        )
        energy.add_metric([source], self._sampler.energy_total_j if self._sampler else 0.0)
        yield energy
        stamp = GaugeMetricFamily("edged_telemetry_last_sample_timestamp_seconds", "When the last sample was read.")
        if latest is not None:
            stamp.add_metric([], latest["ts"])
        yield stamp
        yield self._jobs()
        yield from self._task_metrics()

    def _jobs(self) -> Metric:
        jobs = GaugeMetricFamily("edged_jobs", "Jobs by state.", labels=["state"])
        for state in sorted(self._jobs_by_state):
            jobs.add_metric([state], self._jobs_by_state[state])
        return jobs


    def _task_metrics(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("edged_task_requests", "Predict requests per task (kept minutes).", labels=["task"])
        samples = CounterMetricFamily("edged_task_samples", "Samples predicted per task (kept minutes).", labels=["task"])
        switches = CounterMetricFamily("edged_task_switches", "Switches of a resident base to the task.", labels=["task"])
        latency = GaugeMetricFamily("edged_task_latency_seconds", "Predict latency in the task's latest minute.",
                                    labels=["task", "quantile"])
        energy = CounterMetricFamily("edged_task_energy_joules", "Energy the power source measured over the task's "
                                     "forwards (kept minutes; no sample without a power source).", labels=["task"])
        per_inference = GaugeMetricFamily("edged_task_energy_per_inference_joules",
                                          "Energy per predicted sample in the task's latest minute.", labels=["task"])
        for row in self._tasks:
            requests.add_metric([row["task_id"]], row["requests"])
            samples.add_metric([row["task_id"]], row["samples"])
            switches.add_metric([row["task_id"]], row["switches"])
            for quantile in ("p50", "p95", "p99"):
                if row[f"{quantile}_ms"] is not None:  # None: no minute kept has an answered request
                    latency.add_metric([row["task_id"], f"0.{quantile[1:]}"], row[f"{quantile}_ms"] / 1000)
            if row.get("energy_j") is not None:
                energy.add_metric([row["task_id"]], row["energy_j"])
            if row.get("energy_per_inference_j") is not None:
                per_inference.add_metric([row["task_id"]], row["energy_per_inference_j"])
        yield from (requests, samples, switches, latency, energy, per_inference)
        cache = self._serving.get("cache", {})
        lookups = CounterMetricFamily("edged_task_cache_lookups", "Delta cache lookups by result.", labels=["result"])
        lookups.add_metric(["hit"], cache.get("hits", 0))
        lookups.add_metric(["miss"], cache.get("misses", 0))
        yield lookups
        resident = GaugeMetricFamily("edged_task_cache_bytes", "Bytes of task deltas in the cache.")
        resident.add_metric([], cache.get("bytes", 0))
        yield resident


def render_metrics(db: sqlite_utils.Database, sampler: Optional[Sampler], jobs_by_state: dict[str, int],
                   tasks: Optional[list[dict[str, Any]]] = None, serving: Optional[dict[str, Any]] = None) -> bytes:
    """The exposition text; `jobs_by_state` names every state, 0 included, so each has its series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_TelemetryCollector(db, sampler, jobs_by_state, tasks or [], serving or {}))
    return generate_latest(registry)

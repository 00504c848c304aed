"""Per-task prediction statistics, aggregated by minute on the inference thread so the rows stay bounded:
requests, samples, latency p50/p95/p99, the switches to the task, and the energy the power source measured over
the task's forwards (null where no source reads). Written with the switch log.

A micro-batch's switch and its requests are bucketed by one time, the batch's (`at`), so a switch is counted in
the minute of the requests it served. A minute with switches but no answered request has null percentiles: no
latency was measured there.

A daemon restarted within a minute finds that minute's rows of its previous run: they are `resume`d, so the
rows it writes add to them instead of overwriting them (counts, switches and energy add up; the percentiles are
those of the requests since the restart, or the earlier ones when there were none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from edged.measure.timing import percentiles


@dataclass
class _Minute:
    requests: int = 0
    samples: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    switch_ms: list[float] = field(default_factory=list)
    energy_j: Optional[float] = None  # over the forwards that were measured
    energy_samples: int = 0  # the samples those joules cover
    earlier: Optional[dict[str, Any]] = None  # the row a previous run of the daemon wrote for this task and minute


class ServingStats:
    def __init__(self) -> None:
        self._minutes: dict[tuple[str, int], _Minute] = {}
        self._earlier: dict[tuple[str, int], dict[str, Any]] = {}

    def resume(self, rows: list[dict[str, Any]]) -> None:
        """task_minutes rows an earlier run wrote for minutes that may still get requests: added to, not replaced."""
        self._earlier = {(row["task_id"], row["minute"]): row for row in rows}

    def request(self, task_id: str, samples: int, latency_s: float, energy_j: Optional[float] = None,
                at: Optional[float] = None) -> None:
        """One answered request; `energy_j` its share of its micro-batch's forward (None: not measured); `at` the
        Unix time it is counted at (its micro-batch's; None: now)."""
        bucket = self._bucket(task_id, at)
        bucket.requests += 1
        bucket.samples += samples
        bucket.latencies_ms.append(latency_s * 1000)
        if energy_j is not None:
            bucket.energy_j = (bucket.energy_j or 0.0) + energy_j
            bucket.energy_samples += samples

    def switch(self, task_id: str, seconds: float, at: Optional[float] = None) -> None:
        self._bucket(task_id, at).switch_ms.append(seconds * 1000)

    def rows(self) -> list[dict[str, Any]]:
        """One task_minutes row per (task, minute) seen since the last call; finished minutes are dropped after."""
        now_minute = _minute(time.time())
        out = [_row(task_id, minute, m) for (task_id, minute), m in self._minutes.items()]
        self._minutes = {key: m for key, m in self._minutes.items() if key[1] == now_minute}  # still filling
        return out

    def _bucket(self, task_id: str, at: Optional[float]) -> _Minute:
        key = (task_id, _minute(time.time() if at is None else at))
        if key not in self._minutes:
            self._minutes[key] = _Minute(earlier=self._earlier.pop(key, None))
        return self._minutes[key]


def _row(task_id: str, minute: int, m: _Minute) -> dict[str, Any]:
    e = m.earlier or {"requests": 0, "samples": 0, "switches": 0, "switch_ms_mean": None, "energy_j": None}
    p50: Optional[float] = None
    p95: Optional[float] = None
    p99: Optional[float] = None
    if m.latencies_ms:
        p50, p95, p99, _ = percentiles(m.latencies_ms)
    elif m.earlier is not None:
        p50, p95, p99 = e["p50_ms"], e["p95_ms"], e["p99_ms"]
    switches = len(m.switch_ms) + e["switches"]
    switch_ms = sum(m.switch_ms) + (e["switch_ms_mean"] or 0.0) * e["switches"]
    energy_j = m.energy_j if e["energy_j"] is None else e["energy_j"] + (m.energy_j or 0.0)
    # an earlier row with joules measured all its samples (a source either reads or is `none` for a whole run)
    energy_samples = m.energy_samples + (e["samples"] if e["energy_j"] is not None else 0)
    return {"task_id": task_id, "minute": minute, "requests": m.requests + e["requests"],
            "samples": m.samples + e["samples"], "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "switches": switches,
            "switch_ms_mean": switch_ms / switches if switches else None, "energy_j": energy_j,
            "energy_per_inference_j": energy_j / energy_samples if energy_j is not None and energy_samples else None}


def _minute(t: float) -> int:
    return int(t // 60 * 60)

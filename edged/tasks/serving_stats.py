"""Per-task prediction statistics, aggregated by minute on the inference thread so the rows stay bounded:
requests, samples, latency p50/p95/p99, the switches to the task, and the energy the power source measured over
the task's forwards (null where no source reads). Written with the switch log."""

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


class ServingStats:
    def __init__(self) -> None:
        self._minutes: dict[tuple[str, int], _Minute] = {}

    def request(self, task_id: str, samples: int, latency_s: float, energy_j: Optional[float] = None) -> None:
        """One answered request; `energy_j` its share of its micro-batch's forward (None: not measured)."""
        bucket = self._bucket(task_id)
        bucket.requests += 1
        bucket.samples += samples
        bucket.latencies_ms.append(latency_s * 1000)
        if energy_j is not None:
            bucket.energy_j = (bucket.energy_j or 0.0) + energy_j
            bucket.energy_samples += samples

    def switch(self, task_id: str, seconds: float) -> None:
        self._bucket(task_id).switch_ms.append(seconds * 1000)

    def rows(self) -> list[dict[str, Any]]:
        """One task_minutes row per (task, minute) seen since the last call; finished minutes are dropped after."""
        now_minute = _minute(time.time())
        out = []
        for (task_id, minute), m in self._minutes.items():
            p50, p95, p99, _ = percentiles(m.latencies_ms or [0.0])
            out.append({"task_id": task_id, "minute": minute, "requests": m.requests, "samples": m.samples,
                        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "switches": len(m.switch_ms),
                        "switch_ms_mean": sum(m.switch_ms) / len(m.switch_ms) if m.switch_ms else None,
                        "energy_j": m.energy_j,
                        "energy_per_inference_j": m.energy_j / m.energy_samples
                        if m.energy_j is not None and m.energy_samples else None})
        self._minutes = {key: m for key, m in self._minutes.items() if key[1] == now_minute}  # still filling
        return out

    def _bucket(self, task_id: str) -> _Minute:
        return self._minutes.setdefault((task_id, _minute(time.time())), _Minute())


def _minute(t: float) -> int:
    return int(t // 60 * 60)

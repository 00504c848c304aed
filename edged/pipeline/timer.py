"""The one stage timer of a job: each stage's wall time and, given a power source, its energy and peak memory.

It reports every stage as `{"type": "stage", "stage", "status": "started" | "finished", "seconds"}` to the
progress callback (the job's events and progress; the callback may raise to stop the job), hands each
measurement to `record` as the stage ends, also when it raised (the job's `job_stage_telemetry` row),
and keeps the seconds for `metrics["stage_seconds"]`.

Without a power source (the library's `adapt()`, a dense reference nested inside a job's stage) stages are
only timed: a nested meter would reset the enclosing stage's CUDA peak-memory counter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

from edged.telemetry.energy import EnergyMeter, StageMeasurement
from edged.telemetry.reading import PowerSource

ProgressCallback = Callable[[dict], None]
# (stage, measurement, unix time it started, items it processed or None)
StageRecorder = Callable[[str, StageMeasurement, float, Optional[int]], None]


@dataclass
class StageCount:
    items: Optional[int] = None  # set by the stage: samples it processed (gives items_per_s)


class StageTimer:
    def __init__(self, on_progress: Optional[ProgressCallback] = None, source: Optional[PowerSource] = None,
                 record: Optional[StageRecorder] = None) -> None:
        self.on_progress, self.source, self.record = on_progress, source, record
        self.seconds: dict[str, float] = {}  # stage -> wall seconds, in the order the stages ran

    @contextmanager
    def stage(self, name: str) -> Iterator[StageCount]:
        self._report({"type": "stage", "stage": name, "status": "started"})  # may raise: nothing is metered yet
        count, started_at, start = StageCount(), time.time(), time.perf_counter()
        if self.source is None:
            yield count
            seconds = time.perf_counter() - start
        else:
            meter = EnergyMeter(self.source)
            try:
                with meter:
                    yield count
            finally:
                assert meter.result is not None  # set on exit, also when the stage raised
                if self.record is not None:
                    self.record(name, meter.result, started_at, count.items)
            seconds = meter.result.seconds
        self.seconds[name] = round(seconds, 3)
        self._report({"type": "stage", "stage": name, "status": "finished", "seconds": self.seconds[name]})

    def _report(self, event: dict) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

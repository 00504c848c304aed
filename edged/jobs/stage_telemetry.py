"""Per-stage telemetry of one job: wall time, energy and peak memory into `job_stage_telemetry`.

`JobTelemetry` sits between `adapt()` and the worker's `ProgressReporter`: it is the progress
callback the core gets, starting an `EnergyMeter` on each stage's "started" event and writing the
stage's row on "finished", then passing every event on. The pipeline's own stages (validate,
export, compile, benchmark, record) go through `stage(name)`, which also reports them. Rows are
written as each stage ends, so the dashboard sees a running job's stages live.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from edged.errors import EdgedError
from edged.jobs.progress import ProgressReporter
from edged.settings import Settings
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.energy import EnergyMeter, StageMeasurement
from edged.telemetry.reading import PowerSource
from edged.telemetry.sources import open_named_source, open_power_source
from edged.telemetry.stages import record_stage

log = logging.getLogger(__name__)


def open_job_power_source(settings: Settings) -> PowerSource:
    """The power source the daemon's settings name, else `none`.

    A source that cannot open costs the job its energy numbers (null), never the job itself.
    """
    try:
        return open_power_source(TelemetryConfig.from_settings(settings))
    except EdgedError as exc:
        log.warning("no power source for this job's stages (%s); energy is recorded as null", exc.message)
        return open_named_source("none", TelemetryConfig())


class JobTelemetry:
    """Progress callback for `adapt()` plus `stage(name)` for the pipeline's stages; a context manager
    whose exit records any stage left open by an exception (what it cost before failing)."""

    def __init__(self, db: sqlite_utils.Database, job_id: str, reporter: ProgressReporter,
                 source: PowerSource) -> None:
        self.db, self.job_id, self.reporter, self.source = db, job_id, reporter, source
        self._open: dict[str, tuple[EnergyMeter, float]] = {}  # stage -> (running meter, unix start)
        self._done: dict[str, tuple[StageMeasurement, float]] = {}  # stage -> (measurement, unix start)

    def __enter__(self) -> "JobTelemetry":
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self._open):
            self._finish(name)

    def __call__(self, event: dict[str, Any]) -> None:
        if event["type"] == "stage" and event["status"] == "finished":
            self._finish(event["stage"])
        self.reporter(event)  # may raise JobStopped: a started stage gets its meter only after this
        if event["type"] == "stage" and event["status"] == "started":
            self._start(event["stage"])

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A pipeline stage outside the core: reported (events, stage_seconds) and measured."""
        with self.reporter.stage(name):
            self._start(name)
            try:
                yield
            finally:
                self._finish(name)

    def set_items(self, stage: str, items: int) -> None:
        """Items a finished stage processed (training: samples seen), rewriting its row with items/s."""
        if stage in self._done:
            measurement, started_at = self._done[stage]
            record_stage(self.db, self.job_id, stage, measurement, self.source.name, items, started_at)

    def _start(self, name: str) -> None:
        meter = EnergyMeter(self.source)
        self._open[name] = (meter.__enter__(), time.time())

    def _finish(self, name: str) -> None:
        if name not in self._open:
            return
        meter, started_at = self._open.pop(name)
        meter.__exit__(None, None, None)
        assert meter.result is not None
        self._done[name] = (meter.result, started_at)
        record_stage(self.db, self.job_id, name, meter.result, self.source.name, started_at=started_at)

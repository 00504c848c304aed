"""The worker's progress callback: core events into `job_events` and `jobs.stage/progress`, plus the
cancel and stop checks that end a run between training steps.

Step events are throttled (a training step can take a millisecond on a tiny model; SQLite and the
SSE readers need a few per second, not thousands); stage and epoch events are always written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional

import sqlite_utils

from edged.jobs import records

STEP_EVENT_INTERVAL_S = 0.25
CANCEL_CHECK_INTERVAL_S = 0.5
# Where each stage starts on the 0..1 progress scale; training fills TRAIN_SPAN by step.
STAGE_PROGRESS = {
    "validate": 0.0, "prepare": 0.03, "evaluate_before": 0.05, "dense_reference": 0.055, "calibrate": 0.06,
    "prune": 0.07, "evaluate_pruned": 0.075, "score": 0.08, "mask": 0.09,
    "prepare_method": 0.09, "train": 0.1, "merge": 0.9, "evaluate": 0.91, "export": 0.94, "compile": 0.96,
    "record": 0.99,
}
TRAIN_SPAN = (0.1, 0.9)


class JobStopped(Exception):
    """Raised between steps to end a run: `cancelled` (the user asked) or not (the daemon is stopping)."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled by request" if cancelled else "stopped by a termination signal")
        self.cancelled = cancelled


class ProgressReporter:
    """Callable given to `adapt(on_progress=...)`; also times the pipeline's own stages."""

    def __init__(self, db: sqlite_utils.Database, job_id: str, terminating: Callable[[], bool]) -> None:
        self.db, self.job_id, self.terminating = db, job_id, terminating
        self.stage_name: Optional[str] = None
        self.stage_seconds: dict[str, float] = {}
        self._last_step_write = 0.0
        self._last_cancel_check = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "stage":
            self._on_stage(event)
        elif kind == "step":
            self._on_step(event)
        else:
            records.add_event(self.db, self.job_id, kind, _without_type(event), self.stage_name)
        self.check_stop()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A pipeline stage outside the core (validate, export, compile, record), reported like the core's."""
        self({"type": "stage", "stage": name, "status": "started"})
        start = time.perf_counter()
        yield
        self.stage_seconds[name] = round(time.perf_counter() - start, 3)
        self({"type": "stage", "stage": name, "status": "finished", "seconds": self.stage_seconds[name]})

    def check_stop(self) -> None:
        """Raise JobStopped if the daemon is stopping this worker, or (checked at most every 0.5 s) on cancel."""
        if self.terminating():
            raise JobStopped(cancelled=False)
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_S:
            self._last_cancel_check = now
            if records.cancel_requested(self.db, self.job_id):
                raise JobStopped(cancelled=True)

    def _on_stage(self, event: dict[str, Any]) -> None:
        name = event["stage"]
        if event["status"] == "started":
            self.stage_name = name
            records.set_progress(self.db, self.job_id, STAGE_PROGRESS.get(name, 0.0), stage=name)
        records.add_event(self.db, self.job_id, "stage", _without_type(event), name)

    def _on_step(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        last = event["step"] >= event["total_steps"]
        if now - self._last_step_write < STEP_EVENT_INTERVAL_S and not last:
            return
        self._last_step_write = now
        low, high = TRAIN_SPAN
        records.set_progress(self.db, self.job_id, low + (high - low) * event["step"] / max(event["total_steps"], 1))
        records.add_event(self.db, self.job_id, "step", _without_type(event), self.stage_name)


def _without_type(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"}

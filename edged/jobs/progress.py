"""The worker's progress callback: core events into `job_events` and `jobs.stage/progress`, plus the
cancel and stop checks that end a run between training steps.

Step events are throttled (a training step can take a millisecond on a tiny model; SQLite and the
SSE readers need a few per second, not thousands); stage and epoch events are always written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

import sqlite_utils

from edged.jobs import records

STEP_EVENT_INTERVAL_S = 0.25
CANCEL_CHECK_INTERVAL_S = 0.5


class JobStopped(Exception):
    """Raised between steps to end a run: `cancelled` (the user asked) or not (the daemon is stopping)."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled by request" if cancelled else "stopped by a termination signal")
        self.cancelled = cancelled


class ProgressReporter:
    """The pipeline's progress callback in a job. `stage_progress`: where each stage starts on the 0..1
    scale; `train_span`: the part of it training fills, step by step (both from `edged.pipeline.stages`)."""

    def __init__(self, db: sqlite_utils.Database, job_id: str, terminating: Callable[[], bool],
                 stage_progress: Mapping[str, float], train_span: tuple[float, float]) -> None:
        self.db, self.job_id, self.terminating = db, job_id, terminating
        self.stage_progress, self.train_span = stage_progress, train_span
        self.stage_name: Optional[str] = None
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
            records.set_progress(self.db, self.job_id, self.stage_progress[name], stage=name)
        records.add_event(self.db, self.job_id, "stage", _without_type(event), name)

    def _on_step(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        last = event["step"] >= event["total_steps"]
        if now - self._last_step_write < STEP_EVENT_INTERVAL_S and not last:
            return
        self._last_step_write = now
        low, high = self.train_span
        records.set_progress(self.db, self.job_id, low + (high - low) * event["step"] / max(event["total_steps"], 1))
        records.add_event(self.db, self.job_id, "step", _without_type(event), self.stage_name)


def _without_type(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"}

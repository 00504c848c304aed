"""The worker's progress callback: core events into `job_events` and `jobs.stage/progress`, plus the
cancel and stop checks that end a run between training steps.

Step and progress events are throttled (a training step can take a millisecond on a tiny model; SQLite and
the SSE readers need a few per second, not thousands); plan, stage and epoch events are always written.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import sqlite_utils

from edged.jobs import records

STEP_EVENT_INTERVAL_S = 0.25
# events that move progress through the current stage's span -> (their count so far, their total)
FILLS_STAGE = {"step": ("step", "total_steps"), "dense_reference_step": ("step", "total_steps"),
               "progress": ("done", "total")}
CANCEL_CHECK_INTERVAL_S = 0.5


class JobStopped(Exception):
    """Raised between steps to end a run: `cancelled` (the user asked) or not (the daemon is stopping)."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled by request" if cancelled else "stopped by a termination signal")
        self.cancelled = cancelled


class ProgressReporter:
    """The pipeline's progress callback in a job. The job's first event is its plan (`edged.pipeline.stages
    .progress_plan`: each stage that will run -> its (start, end) on the 0..1 scale); a stage's start moves
    progress to its start, and the stage's own progress events fill its span: training's `step`, the dense
    reference's `dense_reference_step` (inside the "dense_reference" span), a long stage's `progress`
    (`done` of `total`, e.g. calibration's samples). Progress events carry the value they set."""

    def __init__(self, db: sqlite_utils.Database, job_id: str, terminating: Callable[[], bool]) -> None:
        self.db, self.job_id, self.terminating = db, job_id, terminating
        self.plan: dict[str, tuple[float, float]] = {}
        self.stage_name: Optional[str] = None
        self._last_step_write = 0.0
        self._last_cancel_check = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "plan":
            self.plan = {name: (float(start), float(end)) for name, (start, end) in event["stages"].items()}
            records.add_event(self.db, self.job_id, kind, _without_type(event))
        elif kind == "stage":
            self._on_stage(event)
        elif kind in FILLS_STAGE:
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
        name, data = event["stage"], _without_type(event)
        if event["status"] == "started":
            self.stage_name = name
            if name in self.plan:
                data["progress"] = self.plan[name][0]
                records.set_progress(self.db, self.job_id, data["progress"], stage=name)
        records.add_event(self.db, self.job_id, "stage", data, name)

    def _on_step(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        done, total = FILLS_STAGE[kind]
        now = time.monotonic()
        last = event[done] >= event[total]
        if now - self._last_step_write < STEP_EVENT_INTERVAL_S and not last:
            return
        self._last_step_write = now
        data = _without_type(event)
        if self.stage_name in self.plan:
            low, high = self.plan[self.stage_name]
            data["progress"] = low + (high - low) * min(event[done] / max(event[total], 1), 1.0)
            records.set_progress(self.db, self.job_id, data["progress"])
        records.add_event(self.db, self.job_id, kind, data, self.stage_name)


def _without_type(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"}

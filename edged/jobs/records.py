"""Job rows, job events and artifacts in SQLite: the only SQL of the jobs package, and the only SQL on `jobs`
anywhere (the sampler, /metrics, the dashboard and dataset deletion ask the functions here).

Every state change is one conditional UPDATE (`... WHERE state = ?`), so the API, the manager and the
worker, each on its own connection, never overwrite each other's decisions; a final state and its
event are written in one transaction, so an event reader that sees the final state has every event.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any, Optional

import sqlite_utils

from edged.errors import Conflict, Corrupt, NotFound
from edged.jobs.states import ACTIVE_STATES, FINAL_STATES, JobState
from edged.pipeline.config import JobConfig
from edged.store.blobs import BlobStore
from edged.store.db import utc_now


def create_job(db: sqlite_utils.Database, model: str, dataset_id: str, method: str, config: JobConfig) -> str:
    job_id = uuid.uuid4().hex
    with db.atomic():
        db.table("jobs").insert({
            "id": job_id, "state": JobState.QUEUED, "progress": 0.0, "model": model, "dataset_id": dataset_id,
            "method": method, "config": config.model_dump_json(), "created_at": utc_now(),
        })
        add_event(db, job_id, "state", {"state": JobState.QUEUED})
    return job_id


def get_job(db: sqlite_utils.Database, job_id: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
    if not rows:
        raise NotFound(f"no job with id {job_id!r}")
    return _decoded(rows[0])


def list_jobs(db: sqlite_utils.Database, limit: int = 100) -> list[dict[str, Any]]:
    rows = db.query("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", [limit])
    return [_decoded(row) for row in rows]


def jobs_in_state(db: sqlite_utils.Database, state: JobState) -> list[dict[str, Any]]:
    return [_decoded(row) for row in db.query("SELECT * FROM jobs WHERE state = ? ORDER BY rowid", [state])]


def request_cancel(db: sqlite_utils.Database, job_id: str) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one is flagged for its worker (checked between steps)."""
    if _finish(db, job_id, JobState.QUEUED, JobState.CANCELLED, error="cancelled before it started"):
        return get_job(db, job_id)
    flagged = db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = ?", [job_id, JobState.RUNNING])
    job = get_job(db, job_id)
    if flagged.rowcount == 0:
        raise Conflict(f"job {job_id} is already {job['state']}; only queued or running jobs can be cancelled")
    return job


def claim_next(db: sqlite_utils.Database) -> Optional[dict[str, Any]]:
    """Move the oldest queued job to running and return it (None when nothing is queued)."""
    queued = [row["id"] for row in db.query("SELECT id FROM jobs WHERE state = ? ORDER BY created_at, rowid", [JobState.QUEUED])]
    for job_id in queued:  # the first one not cancelled meanwhile
        with db.atomic():
            claimed = db.execute(
                "UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?), worker_pid = NULL "
                "WHERE id = ? AND state = ?", [JobState.RUNNING, utc_now(), job_id, JobState.QUEUED]).rowcount
            if claimed:
                add_event(db, job_id, "state", {"state": JobState.RUNNING})
        if claimed:
            return get_job(db, job_id)
    return None


def set_worker_pid(db: sqlite_utils.Database, job_id: str, pid: int) -> None:
    db.execute("UPDATE jobs SET worker_pid = ? WHERE id = ?", [pid, job_id])


def set_progress(db: sqlite_utils.Database, job_id: str, progress: float, stage: Optional[str] = None) -> None:
    """Progress only moves forward (a resumed job repeats early stages but does not go back)."""
    db.execute("UPDATE jobs SET progress = MAX(progress, ?), stage = COALESCE(?, stage) WHERE id = ? AND state = ?",
               [min(max(progress, 0.0), 1.0), stage, job_id, JobState.RUNNING])


def cancel_requested(db: sqlite_utils.Database, job_id: str) -> bool:
    row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
    return bool(row and row[0])


def finish_running(db: sqlite_utils.Database, job_id: str, state: JobState, error: Optional[str] = None,
                   metrics: Optional[dict[str, Any]] = None) -> bool:
    """running -> succeeded/failed/cancelled/interrupted; False if the job was not running."""
    return _finish(db, job_id, JobState.RUNNING, state, error, metrics)


def interrupt(db: sqlite_utils.Database, job_id: str, reason: str) -> bool:
    return _finish(db, job_id, JobState.RUNNING, JobState.INTERRUPTED, error=reason)


CANCELLED_AT_STOP = "cancelled (the daemon stopped before the worker acted on the cancel)"


def requeue(db: sqlite_utils.Database, job_id: str, reason: str, event_type: str = "state") -> bool:
    """running -> queued, to resume from the stage outputs in its work directory.

    A job whose cancel was requested ends `cancelled` instead: the user's cancel outlives a stop or a
    restart that got there first. Returns whether the job was requeued.
    """
    if _finish(db, job_id, JobState.RUNNING, JobState.CANCELLED, error=CANCELLED_AT_STOP, only_if_cancel_requested=True):
        return False
    with db.atomic():
        moved = db.execute("UPDATE jobs SET state = ?, worker_pid = NULL WHERE id = ? AND state = ?",
                           [JobState.QUEUED, job_id, JobState.RUNNING]).rowcount
        if moved:
            add_event(db, job_id, event_type, {"state": JobState.QUEUED, "reason": reason})
    return bool(moved)


def _finish(db: sqlite_utils.Database, job_id: str, from_state: JobState, state: JobState, error: Optional[str] = None,
            metrics: Optional[dict[str, Any]] = None, only_if_cancel_requested: bool = False) -> bool:
    progress = "1.0" if state == JobState.SUCCEEDED else "progress"
    condition = " AND cancel_requested = 1" if only_if_cancel_requested else ""
    with db.atomic():
        moved = db.execute(
            f"UPDATE jobs SET state = ?, error = ?, metrics = COALESCE(?, metrics), progress = {progress}, "
            f"finished_at = ?, worker_pid = NULL, cancel_requested = 0 WHERE id = ? AND state = ?{condition}",
            [state, error, json.dumps(metrics) if metrics is not None else None, utc_now(), job_id, from_state],
        ).rowcount
        if moved:
            add_event(db, job_id, "state", {"state": state, "error": error})
    return bool(moved)


def delete_finished_job(db: sqlite_utils.Database, job_id: str) -> list[str]:
    """Delete a finished job's row with its events, stage telemetry and artifact rows (ON DELETE
    CASCADE, one transaction). Returns its artifacts' blobs that no other row references, for the
    caller to remove. NotFound if unknown; Conflict while queued or running."""
    # Read first, outside the transaction (a finished job's artifacts no longer change): in WAL mode a
    # transaction that reads and then writes fails at once with "database is locked" if another
    # connection wrote in between, while one that starts with its write waits for the busy timeout.
    blobs = {row["blob"] for row in db.query("SELECT blob FROM artifacts WHERE job_id = ?", [job_id])}
    with db.atomic():
        deleted = db.execute(f"DELETE FROM jobs WHERE id = ? AND state IN ({_marks(FINAL_STATES)})",
                             [job_id, *FINAL_STATES]).rowcount
        if not deleted:
            job = get_job(db, job_id)  # NotFound if there is no such job
            raise Conflict(f"job {job_id} is {job['state']}; cancel it first (POST /v1/jobs/{job_id}/cancel), then "
                           f"delete it once it has ended", detail={"state": job["state"], "accepted": FINAL_STATES})
        marks = _marks(blobs)
        still_used = {row["blob"] for row in db.query(
            f"SELECT blob FROM artifacts WHERE blob IN ({marks}) UNION SELECT blob FROM datasets WHERE blob IN ({marks}) "
            f"UNION SELECT delta_blob FROM tasks WHERE delta_blob IN ({marks}) "  # a published task outlives its job
            f"UNION SELECT compiled_blob FROM tasks WHERE compiled_blob IN ({marks}) "
            f"UNION SELECT pattern_id FROM base_patterns WHERE pattern_id IN ({marks})",  # so does a base's 2:4 pattern
            [*blobs, *blobs, *blobs, *blobs, *blobs])} if blobs else set()
    return sorted(blobs - still_used)


def finished_before(db: sqlite_utils.Database, cutoff: str) -> list[str]:
    """Ids of jobs in a final state that finished before `cutoff` (a `utc_now()`-style timestamp)."""
    return [row["id"] for row in db.query(
        f"SELECT id FROM jobs WHERE state IN ({_marks(FINAL_STATES)}) AND finished_at < ? ORDER BY finished_at",
        [*FINAL_STATES, cutoff])]


def job_ids(db: sqlite_utils.Database) -> set[str]:
    return {row["id"] for row in db.query("SELECT id FROM jobs")}


def running_job_id(db: sqlite_utils.Database) -> Optional[str]:
    """The running job (the first started, should there be several): what telemetry samples are tagged with."""
    row = db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY started_at LIMIT 1", [JobState.RUNNING]).fetchone()
    return row[0] if row else None


def count_by_state(db: sqlite_utils.Database) -> dict[str, int]:
    """How many jobs are in each state; every state is named, with 0 when no job is in it."""
    counts = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    return {**{state.value: 0 for state in JobState}, **counts}


def refuse_if_dataset_in_use(db: sqlite_utils.Database, dataset_id: str) -> None:
    """Conflict while a queued or running job uses the dataset (to train, or as its held-out test set): it must
    not be deleted under them."""
    active = [row["id"] for row in db.query(
        "SELECT id FROM jobs WHERE (dataset_id = ? OR json_extract(config, '$.test_dataset') = ?) "
        f"AND state IN ({_marks(ACTIVE_STATES)}) ORDER BY rowid", [dataset_id, dataset_id, *ACTIVE_STATES])]
    if active:
        raise Conflict(f"dataset {dataset_id} is used by {len(active)} queued or running job(s); "
                       "cancel them or wait for them to finish", detail={"jobs": active})


# --- events ---------------------------------------------------------------------------------------


def add_event(db: sqlite_utils.Database, job_id: str, type_: str, data: dict[str, Any],
              stage: Optional[str] = None) -> None:
    db.execute("INSERT INTO job_events (job_id, ts, type, stage, data) VALUES (?, ?, ?, ?, ?)",
               [job_id, time.time(), type_, stage, json.dumps(data)])


def events_after(db: sqlite_utils.Database, job_id: str, after_id: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    rows = db.query("SELECT * FROM job_events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                    [job_id, after_id, limit])
    return [{**row, "data": json.loads(row["data"])} for row in rows]


def count_events(db: sqlite_utils.Database, job_id: str, type_: str) -> int:
    return int(db.execute("SELECT COUNT(*) FROM job_events WHERE job_id = ? AND type = ?", [job_id, type_]).fetchone()[0])


# --- artifacts ------------------------------------------------------------------------------------


def add_artifact(db: sqlite_utils.Database, blobs: BlobStore, job_id: str, name: str, path: Path,
                 media_type: str = "application/octet-stream") -> None:
    digest = blobs.put_file(path)
    db.table("artifacts").insert({
        "job_id": job_id, "name": name, "blob": digest, "size_bytes": path.stat().st_size,
        "media_type": media_type, "created_at": utc_now(),
    }, replace=True)


def list_artifacts(db: sqlite_utils.Database, job_id: str) -> list[dict[str, Any]]:
    get_job(db, job_id)  # NotFound for an unknown job rather than an empty list
    return [{**row, "sha256": row["blob"]}
            for row in db.query("SELECT * FROM artifacts WHERE job_id = ? ORDER BY name", [job_id])]


def get_artifact(db: sqlite_utils.Database, job_id: str, name: str) -> dict[str, Any]:
    for artifact in list_artifacts(db, job_id):
        if artifact["name"] == name:
            return artifact
    raise NotFound(f"job {job_id} has no artifact {name!r}",
                   detail={"accepted": [a["name"] for a in list_artifacts(db, job_id)]})


def verified_artifact_path(blobs: BlobStore, artifact: dict[str, Any]) -> Path:
    """The artifact's blob, read through once against its digest: a corrupt file is refused, not served."""
    try:
        blobs.verify(artifact["blob"])
    except Corrupt as exc:
        raise Corrupt(f"artifact {artifact['name']} of job {artifact['job_id']} is corrupt in the store: sha256 "
                      f"{exc.detail['actual_sha256']} != {artifact['blob']}; run the job again to produce it anew",
                      detail={**exc.detail, "job": artifact["job_id"], "artifact": artifact["name"]}) from None
    return blobs.path(artifact["blob"])


def _marks(values: Collection[Any]) -> str:
    """One `?` per value, for `IN (...)`."""
    return ", ".join("?" * len(values))


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "config": json.loads(row["config"]), "metrics": json.loads(row["metrics"] or "{}"),
            "cancel_requested": bool(row["cancel_requested"])}


def epoch_events(db: sqlite_utils.Database, job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The `data` of a job's last `limit` `epoch` events, oldest first (what the dashboard's epoch charts draw)."""
    rows = db.query("SELECT data FROM job_events WHERE job_id = ? AND type = 'epoch' ORDER BY id DESC LIMIT ?",
                    [job_id, limit])
    return [json.loads(row["data"]) for row in rows][::-1]

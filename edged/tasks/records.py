"""The `tasks` and `task_switches` tables: all their SQL.

A task is published from a succeeded job (one task per job): its base model (spec, loader options, seed),
its class names and its delta, a blob shared with the job's `delta.safetensors` artifact. A task outlives
its job: deleting the job leaves the task and its blob.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional

import sqlite_utils

from edged.errors import NotFound
from edged.store.db import utc_now

SWITCH_ROWS_KEPT = 10_000  # task_switches keeps the newest rows only
MINUTES_KEPT_S = 7 * 86_400  # task_minutes keeps a week


def publish_task(db: sqlite_utils.Database, job: dict[str, Any], classes: list[str], kind: str, delta_blob: str,
                 delta_bytes: int, compiled: Optional[dict[str, str]] = None, features: Optional[int] = None) -> str:
    """The task of succeeded job `job` (a jobs row); publishing the same job again replaces its task row.
    `compiled`: the job's compiled artifact ({backend, artifact, blob}), which predictions then run through;
    `features`: a tabular task's features per sample."""
    config = job["config"]
    compiled = compiled or {}
    existing = list(db.query("SELECT id FROM tasks WHERE job_id = ?", [job["id"]]))
    task_id = existing[0]["id"] if existing else uuid.uuid4().hex
    db.table("tasks").insert({
        "id": task_id, "job_id": job["id"], "base_model": job["model"], "kind": kind,
        "model_options": json.dumps(config["model_options"]), "seed": config["adapt"]["seed"],
        "method": job["method"], "sparsity": config["adapt"]["sparsity"], "classes": json.dumps(classes),
        "delta_blob": delta_blob, "delta_bytes": delta_bytes, "features": features, "created_at": utc_now(),
        "compiled_backend": compiled.get("backend"), "compiled_artifact": compiled.get("artifact"),
        "compiled_blob": compiled.get("blob"),
    }, replace=True)
    return task_id


def tasks_on_base(db: sqlite_utils.Database, base_model: str, model_options: dict[str, Any], seed: int,
                  sparsity: str) -> list[dict[str, Any]]:
    """The tasks that share a resident base with a job of these settings (and its sparsity)."""
    return [_parsed(row) for row in db.query(
        "SELECT * FROM tasks WHERE base_model = ? AND model_options = ? AND seed = ? AND sparsity = ? ORDER BY created_at",
        [base_model, json.dumps(model_options), seed, sparsity])]


def get_task(db: sqlite_utils.Database, task_id: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM tasks WHERE id = ?", [task_id]))
    if not rows:
        raise NotFound(f"no task with id {task_id!r}; GET /v1/tasks lists them")
    return _parsed(rows[0])


def list_tasks(db: sqlite_utils.Database, limit: int = 1000) -> list[dict[str, Any]]:
    return [_parsed(row) for row in db.query("SELECT * FROM tasks ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                             [limit])]


def delete_task(db: sqlite_utils.Database, task_id: str) -> list[str]:
    """Delete the task's row and the switches to or from it (what prefetch would learn from after a restart);
    returns its delta and compiled blobs that no other row references (for the caller to remove). Its per-minute
    serving statistics stay until they age out (MINUTES_KEPT_S): they are what it served."""
    task = get_task(db, task_id)
    blobs = [b for b in (task["delta_blob"], task.get("compiled_blob")) if b]
    with db.atomic():
        db.execute("DELETE FROM tasks WHERE id = ?", [task_id])
        db.execute("DELETE FROM task_switches WHERE to_task = ? OR from_task = ?", [task_id, task_id])
        used = {row["blob"] for blob in blobs for row in db.query(
            "SELECT blob FROM artifacts WHERE blob = ? UNION SELECT delta_blob FROM tasks WHERE delta_blob = ? "
            "UNION SELECT compiled_blob FROM tasks WHERE compiled_blob = ?", [blob, blob, blob])}
    return [blob for blob in blobs if blob not in used]


def record_switches(db: sqlite_utils.Database, switches: list[dict[str, Any]]) -> None:
    """Append task switches ({at, base, from_task, to_task, seconds, bytes_moved, cache}); keep the newest rows.
    Switches naming a task deleted since they were logged are dropped (the server flushes its log off the delete's
    thread, so a flush can come after the delete's own cleanup)."""
    if not switches:
        return
    with db.atomic():
        first = (db.execute("SELECT coalesce(max(id), 0) FROM task_switches").fetchone()[0]) + 1
        db.table("task_switches").insert_all(switches)
        db.execute("DELETE FROM task_switches WHERE id >= ? AND (NOT EXISTS (SELECT 1 FROM tasks WHERE id = to_task) OR "
                   "(from_task IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tasks WHERE id = from_task)))", [first])
        db.execute("DELETE FROM task_switches WHERE id <= (SELECT max(id) FROM task_switches) - ?", [SWITCH_ROWS_KEPT])


def record_minutes(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> None:
    """Upsert per-task minute rows (a minute still filling is rewritten at each flush); drop those past a week."""
    if not rows:
        return
    with db.atomic():
        db.table("task_minutes").upsert_all(rows, pk=("task_id", "minute"))
        db.execute("DELETE FROM task_minutes WHERE minute < ?", [rows[-1]["minute"] - MINUTES_KEPT_S])


def serving_totals(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Per task: requests, samples, switches and joules (NULL if never measured) over the kept minutes, and the
    percentiles and energy per inference of the latest minute that answered a request (NULL: none did)."""
    latest = " ".join(f"(SELECT {column} FROM task_minutes l WHERE l.task_id = m.task_id AND l.requests > 0 "
                      f"ORDER BY minute DESC LIMIT 1) AS {column},"
                      for column in ("p50_ms", "p95_ms", "p99_ms", "energy_per_inference_j"))
    return list(db.query(
        f"""SELECT m.task_id, sum(m.requests) AS requests, sum(m.samples) AS samples, sum(m.switches) AS switches,
                   {latest} sum(m.energy_j) AS energy_j
            FROM task_minutes m GROUP BY m.task_id ORDER BY m.task_id"""))


def minutes_since(db: sqlite_utils.Database, minute: int) -> list[dict[str, Any]]:
    """task_minutes rows of `minute` (Unix s at a minute's start) and later: what a restarted server adds to."""
    return list(db.query("SELECT * FROM task_minutes WHERE minute >= ?", [minute]))


def transition_counts(db: sqlite_utils.Database) -> list[tuple[Optional[str], str, int]]:
    """(from task, to task, count) over the kept switch rows: what prefetch learns from after a restart."""
    return [(r["from_task"], r["to_task"], r["n"]) for r in db.query(
        "SELECT from_task, to_task, count(*) AS n FROM task_switches GROUP BY from_task, to_task")]


def _parsed(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "classes": json.loads(row["classes"]), "model_options": json.loads(row["model_options"])}

"""`edged submit` and `edged status`: the daemon's HTTP API used the way a field device or an operator
would (upload, start a job, follow its Server-Sent Events, show jobs), through edged.client.

The daemon is found at settings host/port (or --url) and answered with settings' token; its error
bodies come back as the matching EdgedError, so the CLI prints one line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, TextIO

from edged import errors
from edged.client import EdgedClient
from edged.jobs.states import FINAL_STATES, JobState
from edged.settings import Settings

STEP_PRINT_INTERVAL_S = 1.0
TABLE_COLUMNS = ("id", "state", "stage", "progress", "model", "method", "created_at")


def daemon_url(settings: Settings, url: Optional[str] = None) -> str:
    if url:
        return url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # listening on all: ask loopback
    return f"http://{host}:{settings.port}"


def open_client(settings: Settings, url: Optional[str] = None) -> EdgedClient:
    if settings.token is None:
        raise errors.InvalidInput("EDGED_TOKEN is not set: the daemon's token is needed to talk to it "
                                  "(set it in the environment or in the --env-file)")
    return EdgedClient(daemon_url(settings, url), settings.token.get_secret_value())


def submit(settings: Settings, file: Path, job: dict[str, Any], follow: bool, out: TextIO,
           url: Optional[str] = None, name: Optional[str] = None) -> int:
    """Upload `file` as a dataset, start a job on it; with `follow`, stream its events to the end."""
    if not file.is_file():
        raise errors.InvalidInput(f"{file} is not a file")
    with open_client(settings, url) as client:
        with open(file, "rb") as f:
            dataset = client.upload_dataset(file.name, f, name)
        print(f"dataset {dataset['id']}: {dataset['num_samples']} {dataset['kind']} samples, "
              f"{len(dataset['classes'])} classes", file=out)
        created = client.create_job({**job, "dataset": dataset["id"]})
        print(f"job {created['id']}: {created['state']}", file=out)
        if not follow:
            return 0
        final = follow_job(client, created["id"], out)
    return 0 if final == JobState.SUCCEEDED else 1


def follow_job(client: EdgedClient, job_id: str, out: TextIO) -> str:
    """Print a job's events as they come; returns its final state."""
    last_step = 0.0
    for kind, data in client.events(job_id):
        if kind == "step":
            if time.monotonic() - last_step < STEP_PRINT_INTERVAL_S and data["step"] < data["total_steps"]:
                continue
            last_step = time.monotonic()
        line = describe_event(kind, data)
        if line:
            print(line, file=out, flush=True)
        if kind == "end":
            return data["state"]
    return client.get_job(job_id)["state"]


def describe_event(kind: str, data: dict[str, Any]) -> Optional[str]:
    if kind == "stage":
        done = f" in {data['seconds']:.2f} s" if data["status"] == "finished" else ""
        return f"  {data['stage']:<16} {data['status']}{done}"
    if kind == "step":
        return f"  train            step {data['step']}/{data['total_steps']}  loss {data['loss']:.4f}"
    if kind == "epoch":
        return (f"  epoch {data['epoch']:<10} train loss {data['train_loss']:.4f}  "
                f"val accuracy {100 * data['val_accuracy']:.1f} %")
    if kind == "dense_reference_epoch":
        return (f"  dense reference  epoch {data['epoch']}  val accuracy {100 * data['val_accuracy']:.1f} %")
    if kind in ("state", "resumed"):
        reason = data.get("error") or data.get("reason")
        return f"job {data['state']}" + (f": {reason}" if reason else "")
    return None  # "end" repeats the last state event


def status(settings: Settings, job_id: Optional[str], out: TextIO, url: Optional[str] = None) -> int:
    with open_client(settings, url) as client:
        if job_id is None:
            print(jobs_table(client.list_jobs()), file=out)
            return 0
        job = client.get_job(job_id)
        artifacts = client.list_artifacts(job_id)
    print(job_details(job, artifacts), file=out)
    return 0 if job["state"] not in FINAL_STATES or job["state"] == JobState.SUCCEEDED else 1


def jobs_table(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "no jobs"
    rows = [[_cell(job, column) for column in TABLE_COLUMNS] for job in jobs]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(TABLE_COLUMNS)]
    lines = [[c.upper() for c in TABLE_COLUMNS], *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _cell(job: dict[str, Any], column: str) -> str:
    value = job.get(column)
    if column == "progress":
        return f"{100 * float(value or 0):.0f} %"
    return "-" if value is None else str(value)


def job_details(job: dict[str, Any], artifacts: list[dict[str, Any]]) -> str:
    lines = [f"{key:<14}{job[key] if job[key] is not None else '-'}"
             for key in ("id", "state", "stage", "model", "method", "dataset", "error",
                         "created_at", "started_at", "finished_at")]
    lines.insert(3, f"{'progress':<14}{100 * job['progress']:.0f} %")
    metrics = job["metrics"]
    for key in ("accuracy_before", "accuracy_after", "trainable_params", "trainable_fraction", "peak_memory_mb"):
        if metrics.get(key) is not None:
            lines.append(f"{key:<20}{_metric(key, metrics[key])}")
    for stage, seconds in metrics.get("stage_seconds", {}).items():
        lines.append(f"  {stage:<18}{seconds:.2f} s")
    lines += [f"artifact      {a['name']}  {a['size_bytes']} bytes  sha256 {a['sha256'][:16]}" for a in artifacts]
    return "\n".join(lines)


def _metric(key: str, value: Any) -> str:
    if key.startswith("accuracy"):
        return f"{100 * value:.1f} %"
    if key == "trainable_fraction":
        return f"{100 * value:.3f} %"
    if key == "peak_memory_mb":
        return f"{value:.0f} MiB"
    return str(value)

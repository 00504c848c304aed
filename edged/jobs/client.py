"""`edged submit` and `edged status`: the daemon's HTTP API used the way a field device or an operator
would (upload, start a job, follow its Server-Sent Events, show jobs), with httpx.

The daemon is found at settings host/port (or --url) and answered with settings' token; its error
bodies come back as the matching EdgedError, so the CLI prints one line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, TextIO

import httpx

from edged import errors
from edged.jobs.states import FINAL_STATES
from edged.settings import Settings

ERRORS_BY_STATUS = {cls.status: cls for cls in (errors.InvalidInput, errors.NotFound, errors.Conflict,
                                                errors.TooLarge, errors.Unauthorized, errors.Unavailable)}
STEP_PRINT_INTERVAL_S = 1.0
TABLE_COLUMNS = ("id", "state", "stage", "progress", "model", "method", "created_at")


def daemon_url(settings: Settings, url: Optional[str] = None) -> str:
    if url:
        return url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # listening on all: ask loopback
    return f"http://{host}:{settings.port}"


def open_client(settings: Settings, url: Optional[str] = None) -> httpx.Client:
    if settings.token is None:
        raise errors.InvalidInput("EDGED_TOKEN is not set: the daemon's token is needed to talk to it "
                                  "(set it in the environment or in the --env-file)")
    return httpx.Client(base_url=daemon_url(settings, url), timeout=httpx.Timeout(30.0, read=None),
                        headers={"Authorization": f"Bearer {settings.token.get_secret_value()}"})


def checked(response: httpx.Response) -> Any:
    """The JSON body of a 2xx response; otherwise the daemon's error raised as an EdgedError."""
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        message, detail = error["message"], error.get("detail")
    except (ValueError, KeyError, TypeError):
        message, detail = f"HTTP {response.status_code}: {response.text[:200]}", None
    raise ERRORS_BY_STATUS.get(response.status_code, errors.EdgedError)(message, detail)


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return checked(client.request(method, path, **kwargs))
    except httpx.TransportError as exc:
        raise errors.Unavailable(f"cannot reach edged at {client.base_url}: {exc}; start it with `edged serve`") from exc


def submit(settings: Settings, file: Path, job: dict[str, Any], follow: bool, out: TextIO,
           url: Optional[str] = None, name: Optional[str] = None) -> int:
    """Upload `file` as a dataset, start a job on it; with `follow`, stream its events to the end."""
    if not file.is_file():
        raise errors.InvalidInput(f"{file} is not a file")
    with open_client(settings, url) as client:
        with open(file, "rb") as f:
            dataset = _request(client, "POST", "/v1/datasets", files={"file": (file.name, f)},
                               data={"name": name} if name else None)
        print(f"dataset {dataset['id']}: {dataset['num_samples']} {dataset['kind']} samples, "
              f"{len(dataset['classes'])} classes", file=out)
        created = _request(client, "POST", "/v1/jobs", json={**job, "dataset": dataset["id"]})
        print(f"job {created['id']}: {created['state']}", file=out)
        if not follow:
            return 0
        final = follow_job(client, created["id"], out)
    return 0 if final == "succeeded" else 1


def follow_job(client: httpx.Client, job_id: str, out: TextIO) -> str:
    """Print a job's events as they come; returns its final state."""
    last_step = 0.0
    for kind, data in _sse(client, f"/v1/jobs/{job_id}/events"):
        if kind == "step":
            if time.monotonic() - last_step < STEP_PRINT_INTERVAL_S and data["step"] < data["total_steps"]:
                continue
            last_step = time.monotonic()
        line = describe_event(kind, data)
        if line:
            print(line, file=out, flush=True)
        if kind == "end":
            return data["state"]
    return _request(client, "GET", f"/v1/jobs/{job_id}")["state"]


def _sse(client: httpx.Client, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with client.stream("GET", path) as response:
            if not response.is_success:
                response.read()
                checked(response)
            kind = "message"
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    yield kind, json.loads(line.removeprefix("data: "))
    except httpx.TransportError as exc:
        raise errors.Unavailable(f"lost the event stream from {client.base_url}: {exc}") from exc


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
            print(jobs_table(_request(client, "GET", "/v1/jobs")), file=out)
            return 0
        job = _request(client, "GET", f"/v1/jobs/{job_id}")
        artifacts = _request(client, "GET", f"/v1/jobs/{job_id}/artifacts")
    print(job_details(job, artifacts), file=out)
    return 0 if job["state"] not in FINAL_STATES or job["state"] == "succeeded" else 1


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

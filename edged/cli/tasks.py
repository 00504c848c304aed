"""`edged tasks` and `edged predict`: the published tasks and predictions on one, through edged.client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, TextIO

from edged import errors
from edged.cli.jobs import open_client
from edged.settings import Settings

TABLE_COLUMNS = ("id", "base_model", "kind", "method", "classes", "delta_bytes", "serving_backend", "created_at")


def list_tasks(settings: Settings, task_id: Optional[str], out: TextIO, url: Optional[str] = None) -> int:
    with open_client(settings, url) as client:
        if task_id is not None:
            print(json.dumps(client.get_task(task_id), indent=2), file=out)
            return 0
        tasks = client.list_tasks()
    print(tasks_table(tasks), file=out)
    return 0


def tasks_table(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return "no tasks yet: a job that succeeds publishes one (edged submit ... --follow)"
    rows = [[_cell(task, column) for column in TABLE_COLUMNS] for task in tasks]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(TABLE_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(TABLE_COLUMNS, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _cell(task: dict[str, Any], column: str) -> str:
    value = task[column]
    if column == "classes":
        return f"{len(value)} classes"
    return str(value)


def predict(settings: Settings, task_id: str, files: list[Path], texts: Optional[list[str]], top_k: int,
            out: TextIO, url: Optional[str] = None) -> int:
    """Print each input's top-k classes with probabilities, then the latency."""
    if bool(files) == bool(texts):
        raise errors.InvalidInput("give image files (or one .npz), or --text, but not both and not neither")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise errors.InvalidInput(f"not a file: {', '.join(missing)}")
    with open_client(settings, url) as client:
        body = client.predict(task_id, [(f.name, f.read_bytes()) for f in files] if files else None, texts, top_k)
    names = [f.name for f in files] if len(files) == len(body["predictions"]) else \
        [f"#{i}" for i in range(len(body["predictions"]))]
    for name, top in zip(names if files else [t[:40] for t in texts or []], body["predictions"]):
        print(f"{name}: " + ", ".join(f"{p['class']} {100 * p['probability']:.1f} %" for p in top), file=out)
    print(f"latency {body['latency_ms']:.1f} ms (switch {body['switch_ms']:.3f} ms, "
          f"{body['batch_requests']} request(s) in the micro-batch, answered by {body['backend']})", file=out)
    if body.get("backend_reason"):
        print(f"  ({body['backend_reason']})", file=out)
    return 0

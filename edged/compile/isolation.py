"""Run risky GPU cases in worker processes, so a failure cannot break the caller's CUDA context.

A failing cuSPARSELt kernel can leave the process's CUDA context unusable (errors are sticky; on
the H100 with cuSPARSELt 0.8, alg ids 36-49 die with "illegal instruction"). The parent writes the
cases to a file and starts `python -m MODULE --cases FILE --start K`; the worker runs cases from K
on, printing one CASE_MARK line per case, and exits as soon as a case leaves CUDA broken. The
parent then records that case as failed and starts a fresh worker at the next one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CASE_MARK = "@@case "  # worker stdout lines carrying one case's JSON result


def error_text(exc: BaseException) -> str:
    """`Type: first line of the message` (CUDA errors carry pages of hints after it)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def serve_cases(handler: Callable[[dict], dict], healthy: Callable[[], bool], cases: list[dict], start: int) -> int:
    """Worker side: run cases[start:], printing one CASE_MARK line per case. A case that fails and
    leaves CUDA broken (`healthy()` false) ends the worker with exit status 3."""
    for index in range(start, len(cases)):
        try:
            result = handler(cases[index])
        except Exception as exc:  # recorded in the case's row; the health check decides what follows
            result = {"error": error_text(exc)}
        ok = "error" not in result or healthy()
        print(CASE_MARK + json.dumps({"index": index, **result, "worker_broken": not ok}), flush=True)
        if not ok:
            return 3
    return 0


def worker_main(handler: Callable[[dict], dict], healthy: Callable[[], bool], argv: list[str] | None = None) -> int:
    """Entry point of a worker module: `--cases FILE --start K`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=Path, required=True)
    parser.add_argument("--start", type=int, default=0)
    args, _ = parser.parse_known_args(argv)
    return serve_cases(handler, healthy, json.loads(args.cases.read_text()), args.start)


def _read_cases(stdout: str | bytes | None) -> dict[int, dict]:
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else (stdout or "")
    rows = [json.loads(line[len(CASE_MARK):]) for line in text.splitlines() if line.startswith(CASE_MARK)]
    return {row.pop("index"): row for row in rows}


def run_isolated(module: str, cases: list[dict], timeout_s: float, max_breaks: int = 2) -> list[dict]:
    """Parent side: run every case in workers of `module`; one result row per case, in order.

    A worker that dies or hangs marks its current case failed. Cases share a group (case["group"]);
    once a group's cases have broken `max_breaks` workers, its remaining cases are skipped. Cases
    left when `timeout_s` runs out are skipped too."""
    results: dict[int, dict] = {}
    broken: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the edged package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(cases))
        start = 0
        while (start := _next_unskipped(cases, results, broken, max_breaks, start)) < len(cases):
            if time.monotonic() >= deadline:
                break
            cmd = [sys.executable, "-m", module, "--cases", str(path), "--start", str(start)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=deadline - time.monotonic())
                stdout, why = done.stdout, f"worker exited with {done.returncode}: {done.stderr.strip()[-300:]}"
            except subprocess.TimeoutExpired as exc:
                stdout, why = exc.stdout or "", "time budget ran out in this case"  # type: ignore[assignment]
            new = _read_cases(stdout)
            current = next((i for i in range(start, len(cases)) if i not in results and i not in new), None)
            if current is not None and not any(row["worker_broken"] for row in new.values()):
                new[current] = {"error": why, "worker_broken": True}  # the worker died inside this case
            results.update(new)
            for i, row in new.items():
                if row["worker_broken"]:
                    group = str(cases[i].get("group"))
                    broken[group] = broken.get(group, 0) + 1
    return [results.get(i, {"error": "skipped: time budget ran out"}) for i in range(len(cases))]


def _next_unskipped(cases: list[dict], results: dict[int, dict], broken: dict[str, int], max_breaks: int, start: int) -> int:
    for i in range(start, len(cases)):
        if i in results:
            continue
        group = cases[i].get("group")
        if broken.get(str(group), 0) >= max_breaks:
            results[i] = {"error": f"skipped: {group} broke the CUDA context {max_breaks}x", "worker_broken": False}
            continue
        return i
    return len(cases)

"""`edged bench api`: how the HTTP API answers while the daemon trains, under closed-loop load.

It starts a real `edged serve` on loopback (edged.client.LocalDaemon), uploads the bundled digits, and drives
1, 10 and 50 concurrent closed-loop clients (each sends its next request when the last one is answered)
over the GET routes for a fixed time: first idle, then while a job trains (MobileNetV2 on the digits,
cancelled once measured), with SSE followers on that job. It prints requests/s, errors and
p50/p95/p99 per route and writes everything as JSON. Lost SSE events are the events a replay of the
finished job's stream holds that a live follower did not receive.

    edged bench api --clients 1,10,50 --duration 20 --out api_bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edged.bench.cli_lists import IMAGE_SIZE, count, field_count, int_list, number
from edged.bench.report import format_table, machine_summary
from edged.cli.demo_data import mnist_upload
from edged.client import EdgedClient, LocalDaemon
from edged.errors import EdgedError
from edged.jobs.states import FINAL_STATES
from edged.settings import Settings

# Route name -> path; {job} and {dataset} are filled in. The telemetry query asks for the last minute,
# as the dashboard's refresh does.
ROUTES = {
    "/healthz": "/healthz",
    "/v1/jobs": "/v1/jobs",
    "/v1/jobs/{id}": "/v1/jobs/{job}",
    "/v1/datasets": "/v1/datasets",
    "/v1/datasets/{id}": "/v1/datasets/{dataset}",
    "/v1/models": "/v1/models",
    "/v1/telemetry": "/v1/telemetry?since={minute_ago}",
    "/metrics": "/metrics",
}
REQUEST_TIMEOUT_S = 30.0
BATCH_SIZE = 32
TRAIN_WAIT_S = 600.0  # until the job's train stage starts (model load, calibration): slow on a small board


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2)}


def summarise(samples: list[tuple[str, float, bool]], duration_s: float) -> dict[str, Any]:
    """Requests, requests/s, errors and latency percentiles, for all routes and per route."""

    def stats(rows: list[tuple[str, float, bool]]) -> dict[str, Any]:
        return {"requests": len(rows), "requests_per_s": round(len(rows) / duration_s, 1),
                "errors": sum(not ok for _, _, ok in rows), **percentiles_ms([s for _, s, _ in rows])}

    routes = {name: stats([row for row in samples if row[0] == name]) for name in ROUTES}
    return {"all": stats(samples), "routes": routes}


async def closed_loop(url: str, token: str, paths: dict[str, str], clients: int,
                      duration_s: float) -> list[tuple[str, float, bool]]:
    """(route, seconds, ok) of every request `clients` closed-loop clients sent in `duration_s`.

    Each client has its own httpx client and keep-alive connection, as separate devices would (one
    shared pool of 50 connections costs httpx three times the CPU per request, on the cores the daemon
    is measured on). Each connects and sends one request before the clock starts: 50 connections
    opening at once are a start-up burst, not the steady state measured here."""
    samples: list[tuple[str, float, bool]] = []
    names = list(paths)
    warmed_up, start = [0], asyncio.Event()
    stop_at = [0.0]

    async def get(http: httpx.AsyncClient, name: str) -> bool:
        try:
            return (await http.get(paths[name].format(minute_ago=time.time() - 60))).status_code == 200
        except httpx.HTTPError:
            return False

    async def client(offset: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=REQUEST_TIMEOUT_S) as http:
            await get(http, "/healthz")
            warmed_up[0] += 1
            if warmed_up[0] == clients:
                stop_at[0] = time.monotonic() + duration_s
                start.set()
            await start.wait()
            turn = offset  # each client starts at another route, then goes round them all
            while time.monotonic() < stop_at[0]:
                name = names[turn % len(names)]
                turn += 1
                started = time.perf_counter()
                ok = await get(http, name)
                samples.append((name, time.perf_counter() - started, ok))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return samples


class Followers:
    """SSE followers of one job, each on its own thread, each collecting the event ids it receives."""

    def __init__(self, url: str, token: str, job_id: str, count: int) -> None:
        self.url, self.token, self.job_id = url, token, job_id
        self.received: list[list[int]] = [[] for _ in range(count)]
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._follow, args=(i,), daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _follow(self, index: int) -> None:
        client = EdgedClient(self.url, self.token)
        try:
            for kind, data in client.events(self.job_id):
                if kind != "end":
                    self.received[index].append(int(data["id"]))
        except EdgedError as exc:
            self.errors.append(exc.message)
        finally:
            client.close()

    def report(self, replay: list[int], timeout_s: float = 60.0) -> dict[str, Any]:
        """Joined after the job ended: what each follower missed of `replay` (the full stream)."""
        for thread in self.threads:
            thread.join(timeout=timeout_s)
        expected = set(replay)
        lost = [len(expected - set(ids)) for ids in self.received]
        return {"followers": len(self.threads), "events": len(replay), "lost_events": sum(lost),
                "lost_per_follower": lost, "errors": self.errors,
                "in_order": all(ids == sorted(ids) for ids in self.received)}


def replay(client: EdgedClient, job_id: str) -> list[dict[str, Any]]:
    """Every event of a finished job, from its stream's start."""
    return [data for kind, data in client.events(job_id) if kind != "end"]


def training_samples_per_s(events: list[dict[str, Any]], since: float, until: float, batch_size: int) -> float | None:
    """How fast the job trained in [since, until] (Unix s), from its step events (global step numbers)."""
    steps = [(e["ts"], e["step"]) for e in events if e["type"] == "step" and since <= e["ts"] <= until]
    if len(steps) < 2 or steps[-1][0] <= steps[0][0]:
        return None
    return round((steps[-1][1] - steps[0][1]) * batch_size / (steps[-1][0] - steps[0][0]), 1)


def wait_for_training(client: EdgedClient, job_id: str) -> None:
    deadline = time.monotonic() + TRAIN_WAIT_S
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job["state"] in FINAL_STATES:
            raise EdgedError(f"the benchmark's job ended {job['state']} before training: {job['error']}")
        if job["stage"] == "train":
            return
        time.sleep(0.5)
    raise EdgedError(f"the benchmark's job did not reach its train stage in {TRAIN_WAIT_S:.0f} s")


def run_phase(phase: str, daemon: LocalDaemon, paths: dict[str, str], levels: list[int],
              duration_s: float) -> list[dict[str, Any]]:
    rows = []
    for clients in levels:
        started = time.time()
        samples = asyncio.run(closed_loop(daemon.url, daemon.token, paths, clients, duration_s))
        rows.append({"phase": phase, "clients": clients, "duration_s": duration_s, "started_at": started,
                     "ended_at": time.time(), **summarise(samples, duration_s)})
        print(f"{phase:<9} {clients:>3} clients: {rows[-1]['all']['requests_per_s']:.0f} requests/s, "
              f"p99 {rows[-1]['all']['p99_ms']} ms, {rows[-1]['all']['errors']} errors", flush=True)
    return rows


def run_benchmark(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    levels = args.clients
    worker = {"EDGED_WORKER_NICE": str(args.worker_nice), "EDGED_WORKER_THREADS": str(args.worker_threads)}
    with LocalDaemon(data_dir, settings=worker) as daemon:
        client = EdgedClient(daemon.url, daemon.token)
        dataset = client.upload_dataset("digits.zip", mnist_upload(args.samples), name="bench-api-digits")
        paths = {name: path.replace("{dataset}", dataset["id"]) for name, path in ROUTES.items()}
        job_body = {"model": "mobilenet_v2", "dataset": dataset["id"], "epochs": 1000, "image_size": args.image_size,
                    "batch_size": BATCH_SIZE, "budget": 0.001}
        idle_job = client.create_job(job_body)
        client.cancel_job(idle_job["id"])  # a real job row for /v1/jobs/{id} while idle, never trained
        phases = run_phase("idle", daemon, {k: v.replace("{job}", idle_job["id"]) for k, v in paths.items()},
                           levels, args.duration)
        job = client.create_job(job_body)
        followers = Followers(daemon.url, daemon.token, job["id"], args.followers)
        wait_for_training(client, job["id"])
        phases += run_phase("training", daemon, {k: v.replace("{job}", job["id"]) for k, v in paths.items()},
                            levels, args.duration)
        client.cancel_job(job["id"])
        events = replay(client, job["id"])
        sse = followers.report([int(e["id"]) for e in events])
        client.close()
    for row in phases:
        if row["phase"] == "training":
            row["training_samples_per_s"] = training_samples_per_s(events, row["started_at"], row["ended_at"],
                                                                   BATCH_SIZE)
    return {"benchmark": "api", "machine": machine_summary(), "argv": sys.argv[1:], "samples": args.samples,
            "image_size": args.image_size, "worker_nice": args.worker_nice, "worker_threads": args.worker_threads,
            "phases": phases, "sse": sse}


def print_report(result: dict[str, Any]) -> None:
    columns = [("phase", "phase"), ("clients", "clients"), ("requests_per_s", "requests/s"), ("errors", "errors"),
               ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms")]
    print(format_table([{**p, **p["all"]} for p in result["phases"]],
                       columns + [("training_samples_per_s", "training samples/s")]))
    per_route = [{"phase": p["phase"], "clients": p["clients"], "route": name, **stats}
                 for p in result["phases"] for name, stats in p["routes"].items()]
    print("\n" + format_table(per_route, columns[:2] + [("route", "route")] + columns[2:]))
    sse = result["sse"]
    print(f"\nSSE: {sse['followers']} followers, {sse['events']} events, {sse['lost_events']} lost, "
          f"{len(sse['errors'])} errors, in order: {sse['in_order']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int_list(example="1,10,50"), default=[1, 10, 50],
                        help="concurrency levels, comma-separated (default 1,10,50)")
    parser.add_argument("--duration", type=number(0.0, open_minimum=True), default=20.0,
                        help="seconds per concurrency level and phase")
    parser.add_argument("--followers", type=count(0), default=5, help="SSE followers of the training job")
    parser.add_argument("--samples", type=count(), default=1000, help="bundled digits to upload")
    parser.add_argument("--image-size", type=IMAGE_SIZE, default=32, help="MobileNetV2 input size of the training job")
    parser.add_argument("--worker-nice", type=field_count(Settings, "worker_nice"), default=10,
                        help="the daemon's EDGED_WORKER_NICE")
    parser.add_argument("--worker-threads", type=field_count(Settings, "worker_threads"), default=0,
                        help="the daemon's EDGED_WORKER_THREADS")
    parser.add_argument("--data-dir", type=Path, help="the daemon's data dir (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path("api_bench.json"), help="where to write the JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edged-bench-api-") as tmp:
        result = run_benchmark(args, args.data_dir or Path(tmp))
    print_report(result)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0

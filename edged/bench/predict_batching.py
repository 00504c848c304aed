"""`edged bench predict --clients ...`: what the micro-batch wait (`EDGED_PREDICT_MAX_WAIT_MS`) does to predicts.

The task server gathers a task's queued requests into one forward. Requests that arrive while a forward runs queue
and share the next batch whatever the wait; the wait adds company only for requests that come within it of an idle
server. So a micro-batch waits, at most the wait, only until it holds as many requests as its task's previous one
(`TaskServer._gather`): a lone client does not pay it. Here C closed-loop clients (each sends its next one-image
predict when its last is answered) hit one eager task of the real TaskServer at each wait: latency, answered
predicts per second, and how many requests a forward served.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch

from edged.bench.switch_tasks import SwitchSetup
from edged.data.bundled import mnist_5k
from edged.measure.timing import percentiles
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import migrate, open_db
from edged.tasks.inputs import Samples
from edged.tasks.server import TaskServer

COLUMNS = [("max_wait_ms", "wait ms"), ("clients", "clients"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
           ("predicts_per_s", "predicts/s"), ("mean_batch_requests", "requests per forward")]


def _clients_run(server: TaskServer, task: dict[str, Any], clients: int, predicts: int, warmup: int) -> dict[str, Any]:
    """`clients` threads, each `warmup` + `predicts` one-image predicts in a closed loop; the timed ones' figures."""
    images = mnist_5k().x[-clients:]  # (C, 1, 28, 28) uint8: digits the task did not train on
    assert isinstance(images, torch.Tensor)  # an image set
    times: list[list[float]] = [[] for _ in range(clients)]
    batches: list[list[int]] = [[] for _ in range(clients)]
    started = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        sample = Samples("image", images[index : index + 1])
        for _ in range(warmup):
            server.submit(task, sample, 1, False).result(timeout=120)
        started.wait()
        for _ in range(predicts):
            begin = time.perf_counter()
            answer = server.submit(task, sample, 1, False).result(timeout=120)
            times[index].append((time.perf_counter() - begin) * 1000.0)
            batches[index].append(answer["batch_requests"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    started.wait()
    begin = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    every = [t for per_client in times for t in per_client]
    p50, _, p99, _ = percentiles(every)
    sizes = [b for per_client in batches for b in per_client]
    return {"clients": clients, "p50_ms": p50, "p99_ms": p99, "predicts_per_s": len(every) / wall,
            "mean_batch_requests": sum(sizes) / len(sizes), "predicts": len(every)}


def eager_task_row(setup: SwitchSetup, blobs: BlobStore) -> dict[str, Any]:
    """The setup's first task as the task server gets it, published without a compiled artifact (its delta stored)."""
    assert setup.base is not None  # the CPU setup names its base
    task = setup.tasks[0]
    return {"id": "eager", "kind": "image", "classes": task.classes, "delta_blob": blobs.put_file(task.delta),
            **setup.base}


def measure_waits(setup: SwitchSetup, workdir: Path, waits: list[float], clients: list[int], predicts: int,
                  warmup: int = 5) -> list[dict[str, Any]]:
    """One row per (wait, clients) on the setup's first task served eagerly, each wait on a server of its own."""
    rows = []
    for wait in waits:
        settings = Settings(data_dir=workdir / f"wait-{wait:g}", device="cpu", predict_threads=torch.get_num_threads(),
                            predict_max_wait_ms=wait, predict_batch_limit=max(clients))
        migrate(open_db(settings.db_path))
        blobs = BlobStore(settings.blobs_dir)
        row = eager_task_row(setup, blobs)
        server = TaskServer(settings, blobs)
        server.start()
        try:
            for count in clients:
                rows.append({"max_wait_ms": wait, **_clients_run(server, row, count, predicts, warmup)})
                print(f"  wait {wait:g} ms, {count} clients: {rows[-1]['p50_ms']:.2f} ms p50, "
                      f"{rows[-1]['predicts_per_s']:.0f} predicts/s", flush=True)
        finally:
            server.stop()
    return rows

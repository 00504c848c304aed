"""Predict latency on one task, alone (steady state) and while another thread keeps switching tasks (a storm).

- `lock_storm` (every device): the resident base and one lock, as the task server's one inference thread
  serialises the model's users. A predict switches back to task 0 (a no-op when nothing moved it) and runs
  one forward; the storm thread switches to a random other task in a loop. The predicting client waits
  `think_ms` between predicts, so the storm gets the lock in between: storm latency = waiting for at most one
  switch + the switch back + the forward.
- `server_storm`: the real `TaskServer` (on the GPU it serves the ViT-B/16 base on the bench's resident model,
  which the model registry does not build). The predicting client submits to
  task 0; the storm client submits one-sample predicts to random other tasks, each of which makes the server
  switch (and run that task's forward: a switch is only ever made to serve a request).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edged.bench.switch_rows import read_delta
from edged.bench.switch_tasks import SwitchSetup
from edged.measure.timing import percentiles
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import migrate, open_db
from edged.tasks.inputs import Samples
from edged.tasks.resident import ResidentModel
from edged.tasks.server import TaskServer

WARMUP_PREDICTS = 5


def _phases(predict_ms: Callable[[], float], storm_step: Callable[[random.Random], object], predicts: int,
            seed: int, label: str) -> list[dict]:
    """Time `predicts` predicts alone, then with a thread calling `storm_step` in a loop (a row each)."""
    rows: list[dict[str, Any]] = []
    steps, stop = [0], threading.Event()

    def storm() -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            storm_step(rng)
            steps[0] += 1
            time.sleep(0)  # hand the GIL over: the predicting thread may be waiting to take the lock

    for phase in (f"steady ({label})", f"storm ({label})"):
        for _ in range(WARMUP_PREDICTS):
            predict_ms()
        thread = threading.Thread(target=storm, daemon=True) if rows else None
        steps[0], started = 0, time.perf_counter()
        stop.clear()
        if thread is not None:
            thread.start()
        times = [predict_ms() for _ in range(predicts)]
        stop.set()
        if thread is not None:
            thread.join()
        p50, _, p99, _ = percentiles(times)
        rows.append({"phase": phase, "p50_ms": p50, "p99_ms": p99, "predicts": predicts,
                     "switches_per_s": steps[0] / (time.perf_counter() - started)})
    rows[1]["p99_vs_steady"] = rows[1]["p99_ms"] / rows[0]["p99_ms"]
    return rows


def lock_storm(setup: SwitchSetup, resident: ResidentModel, predicts: int, seed: int,
               think_ms: float = 1.0) -> list[dict]:
    hot = [read_delta(setup, resident, t) for t in range(len(setup.tasks))]
    lock = threading.Lock()

    def predict_ms() -> float:
        time.sleep(think_ms / 1000)
        start = time.perf_counter()
        with lock:
            resident.activate_("0", hot[0])
            resident.logits(setup.sample)  # the logits come back to the CPU: the device is done
        return (time.perf_counter() - start) * 1000.0

    def switch_other(rng: random.Random) -> None:
        with lock:
            task = rng.randrange(1, len(hot))
            resident.activate_(str(task), hot[task])

    return _phases(predict_ms, switch_other, predicts, seed, "one lock, switches only")


def _task_rows(setup: SwitchSetup, blobs: BlobStore, seed: int) -> list[dict[str, Any]]:
    base = setup.base or {"base_model": f"edged bench switch: {setup.source}", "model_options": {}, "seed": seed}
    return [{"id": task.name, "kind": "image", "classes": task.classes, "delta_blob": blobs.put_file(task.delta),
             **base} for task in setup.tasks]


def server_storm(setup: SwitchSetup, resident: ResidentModel, workdir: Path, predicts: int, seed: int) -> list[dict]:
    """`resident` serves the tasks where the server cannot load the base by its spec (`setup.base` is None)."""
    settings = Settings(data_dir=workdir / "task-server", device=str(setup.device), predict_threads=torch.get_num_threads())
    migrate(open_db(settings.db_path))
    blobs = BlobStore(settings.blobs_dir)
    rows = _task_rows(setup, blobs, seed)
    image = Samples("image", [setup.raw_sample])
    server = TaskServer(settings, blobs)
    if setup.base is None:
        server.serve_base_on(rows[0], resident)
    server.start()

    def ask(row: dict[str, Any]) -> float:
        start = time.perf_counter()
        server.submit(row, image, 1, False).result(timeout=60)
        return (time.perf_counter() - start) * 1000.0

    try:
        for row in rows:
            ask(row)  # loads the base and every delta
        table = _phases(lambda: ask(rows[0]), lambda rng: ask(rng.choice(rows[1:])), predicts, seed,
                           "TaskServer, each switch serves a predict")
    finally:
        server.stop()
    table[-1]["server"] = server.stats()
    return table

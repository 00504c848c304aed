"""The task server: one inference thread owns every resident base, so a request never sees a half-applied task.

Requests queue up; the thread takes the oldest, gathers the queued requests of the same task until the
micro-batch holds `predict_batch_limit` samples or as many requests as the task's previous micro-batch served, waiting
for them at most `predict_max_wait_ms` (a lone client never waits; see `_gather`), activates the task on
its base (a delta switch: O(nnz)), runs one forward (its energy read from the power source around it, see
edged.tasks.energy), and answers each request with its top-k and its share of those joules. A task whose job
compiled an onnxruntime or TensorRT artifact runs that instead (edged.tasks.compiled), with the base's
preprocessing; a cusparselt task on CUDA runs through its base's one compiled 2:4 model, switched by recompressing
the layers the two tasks' deltas touch (edged.tasks.compiled_2_4). Each switch is recorded (buffered, written in
batches so SQLite stays off the switch path); when the queue is idle, the likeliest next task after the active
one (first-order transition counts) is loaded into the delta cache.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch

from edged.devices import resolve_device
from edged.errors import EdgedError, Unavailable
from edged.models.loader import load_model
from edged.models.sources import ModelSources
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import open_db
from edged.tasks import records
from edged.tasks.batch import Forward, answer, model_inputs, refused, run_forward
from edged.tasks.cache import DeltaCache
from edged.tasks.compiled import CUSPARSELT, EAGER, CompiledCache, load_runner
from edged.tasks.compiled_2_4 import CompiledBase, TaskLayers, plan_choices
from edged.tasks.delta import parse_delta
from edged.tasks.energy import InferenceEnergy
from edged.tasks.flat import PlacedDelta
from edged.tasks.inputs import Samples
from edged.tasks.resident import ResidentModel, SwitchCost
from edged.tasks.serving_stats import ServingStats

log = logging.getLogger(__name__)
SWITCH_FLUSH_S = 1.0


@dataclass
class PendingPredict:
    task: dict[str, Any]  # the tasks row
    samples: Samples
    top_k: int
    with_logits: bool
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


Control = Callable[[], None]  # run on the inference thread, between micro-batches


def base_key(task: dict[str, Any]) -> str:
    """Tasks share a resident base when they adapted the same model, built with the same options and seed."""
    return json.dumps([task["base_model"], task["model_options"], task["seed"]], sort_keys=True)


class TaskServer:
    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.settings, self.blobs = settings, blobs
        self.device = resolve_device(settings.device)
        self.cache = DeltaCache(int(settings.task_cache_mb * 2**20))
        self.compiled = CompiledCache(int(settings.compiled_cache_mb * 2**20),
                                      lambda task: load_runner(task, blobs, settings.predict_threads))
        self.switches = 0
        self._queue: queue.Queue[Union[PendingPredict, Control, None]] = queue.Queue()
        self._held: list[PendingPredict] = []  # taken from the queue for another task's micro-batch
        self._company: dict[str, int] = {}  # task id -> requests its last micro-batch served: how many to wait for
        self._bases: dict[str, ResidentModel] = {}
        self._compiled_2_4: dict[str, CompiledBase] = {}  # base key -> its one cusparselt model (CUDA only)
        self._layers: dict[str, TaskLayers] = {}  # task id -> the tensors its delta touches
        self._rows: dict[str, dict[str, Any]] = {}  # tasks seen, for prefetch
        self._transitions: Counter[tuple[Optional[str], str]] = Counter()
        self._last_task: Optional[str] = None
        self._switch_log: list[dict[str, Any]] = []
        self._stats = ServingStats()
        self._energy = InferenceEnergy.from_settings(settings)
        self._last_flush = time.monotonic()
        self._unflushed = False  # records taken since the last flush: written within SWITCH_FLUSH_S, even when idle
        self._thread = threading.Thread(target=self._run, name="edged-task-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def serve_base_on(self, task: dict[str, Any], resident: ResidentModel) -> None:
        """Serve the tasks of `task`'s base on `resident`, a model already loaded (a benchmark's ViT-B/16, which
        the model registry does not build). Before `start`."""
        self._bases[base_key(task)] = resident

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def submit(self, task: dict[str, Any], samples: Samples, top_k: int, with_logits: bool) -> Future:
        pending = PendingPredict(task, samples, top_k, with_logits)
        self._queue.put(pending)
        return pending.future

    def forget(self, task_id: str) -> Future:
        """Free a deleted task: out of the cache, and out of its base's weights if active there."""
        done: Future = Future()

        def drop() -> None:
            self.cache.drop(task_id)
            self.compiled.drop(task_id)
            self._rows.pop(task_id, None)
            self._layers.pop(task_id, None)
            self._company.pop(task_id, None)
            for pair in [pair for pair in self._transitions if task_id in pair]:
                del self._transitions[pair]
            for key, compiled in list(self._compiled_2_4.items()):
                if compiled.active == task_id:  # rebuilt from the next task's plan: nothing of this one is kept
                    del self._compiled_2_4[key]
            for resident in self._bases.values():
                if resident.active == task_id:
                    resident.deactivate_()
            done.set_result(None)

        self._queue.put(drop)
        return done

    def stats(self) -> dict[str, Any]:
        s = self.cache.stats
        return {"bases": len(self._bases), "switches": self.switches,
                "cache": {"entries": len(self.cache), "bytes": self.cache.bytes, "budget_bytes": self.cache.budget_bytes,
                          "hits": s.hits, "misses": s.misses},
                "prefetch": {"loaded": s.prefetched, "used": s.prefetch_used,
                             "accuracy": s.prefetch_used / s.prefetched if s.prefetched else None},
                "compiled": self.compiled.stats()}

    def _run(self) -> None:
        torch.set_num_threads(self.settings.predict_threads)
        db = open_db(self.settings.db_path)
        self._transitions.update({(a, b): n for a, b, n in records.transition_counts(db)})
        self._stats.resume(records.minutes_since(db, int(time.time() // 60 * 60)))  # a restart within a minute adds on
        try:
            while True:
                item = self._next()
                if item is None:
                    break
                if isinstance(item, PendingPredict):
                    self._serve_safely(self._gather(item))
                else:
                    item()
                self._flush_switches(db, force=False)
                if self._queue.empty() and not self._held:
                    self._prefetch()
        finally:
            self._flush_switches(db, force=True)
            db.close()
            self._energy.close()

    def _next(self) -> Union[PendingPredict, Control, None]:
        """The next request or control; a no-op control when records wait to be flushed and nothing came in time."""
        if self._held:
            return self._held.pop(0)
        if not self._unflushed:
            return self._queue.get()
        try:
            return self._queue.get(timeout=max(0.0, self._last_flush + SWITCH_FLUSH_S - time.monotonic()))
        except queue.Empty:
            return _idle

    def _gather(self, first: PendingPredict) -> list[PendingPredict]:
        """`first` and the queued requests of its task, within the batch limit. It waits (at most the wait) only
        until the batch has as many requests as the task's previous one, then takes what is queued: requests that
        arrive during a forward share the next batch anyway, so waiting longer only delays them. A lone client's
        predict goes straight to the forward (CPU, MobileNetV2 64 px: p50 15 -> 9 ms, `edged bench predict
        --clients`), while closed-loop clients still fill whole batches without waiting out the window."""
        batch, samples = [first], len(first.samples)
        deadline = first.enqueued + self.settings.predict_max_wait_ms / 1000
        expected = self._company.get(first.task["id"], 1)
        while samples < self.settings.predict_batch_limit:
            waiting = deadline - time.perf_counter() if len(batch) < expected else 0.0
            try:
                item = self._queue.get(timeout=max(0.0, waiting))
            except queue.Empty:
                break
            if isinstance(item, PendingPredict) and item.task["id"] == first.task["id"] \
                    and samples + len(item.samples) <= self.settings.predict_batch_limit:
                batch.append(item)
                samples += len(item.samples)
            elif isinstance(item, PendingPredict):
                self._held.append(item)
            else:
                self._queue.put(item)  # a control or the stop: after this batch
                break
        self._company[first.task["id"]] = len(batch)
        return batch

    def _serve_safely(self, batch: list[PendingPredict]) -> None:
        """`_serve`; a defect in it fails its requests (500), never the inference thread, whose end would leave
        every later predict waiting forever."""
        try:
            self._serve(batch)
        except Exception as exc:
            log.exception("a micro-batch of task %s failed", batch[0].task["id"])
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)

    def _serve(self, batch: list[PendingPredict]) -> None:
        task = batch[0].task
        at = time.time()  # the minute its switch and its requests are counted in
        route = self.compiled.route(task, self.settings.device)
        try:
            resident = self._resident(task)  # its preprocessing serves every route; its weights the eager one
            model: Forward = resident
            if route.backend == EAGER:
                cost = self._activate(task, resident, at)
            elif route.backend == CUSPARSELT:
                model, cost = self._activate_compiled_2_4(task, resident, at)
            else:  # the compiled artifact is the whole adapted model: nothing to switch
                model, cost = self.compiled.get(task), SwitchCost(0.0, 0)
        except Exception as exc:  # the whole batch shares the failure: the task could not be activated
            for pending in batch:
                pending.future.set_exception(exc if isinstance(exc, EdgedError) else _unavailable(task, exc))
            return
        inputs = {}
        for pending in batch:
            try:
                inputs[id(pending)] = model_inputs(resident.preprocess, pending.samples, task["classes"])
            except Exception as exc:  # the request's inputs, not the server: a 4xx for it alone
                pending.future.set_exception(refused(exc))
        ready = [p for p in batch if id(p) in inputs]
        if not ready:
            return
        before = self._energy.start()
        results = run_forward(model, [inputs[id(p)] for p in ready])
        joules = self._energy.joules_since(before)
        batch_samples = sum(len(p.samples) for p in ready)
        for pending, logits in zip(ready, results):
            if isinstance(logits, BaseException):
                pending.future.set_exception(logits)
            else:
                seconds = time.perf_counter() - pending.enqueued
                share = None if joules is None else joules * len(pending.samples) / batch_samples  # by samples
                pending.future.set_result(answer(task, logits, pending.top_k, pending.with_logits, seconds,
                                                 cost.seconds, len(ready), route, share))
                self._stats.request(task["id"], len(pending.samples), seconds, share, at)
                self._unflushed = True

    def _activate(self, task: dict[str, Any], resident: ResidentModel, at: float) -> SwitchCost:
        """Write the task's delta into its resident base (from the delta cache, else its blob); records a switch."""
        delta, found = self.cache.get(task["id"])
        if delta is None:
            delta = self._load_delta(task)
            self.cache.put(task["id"], delta)
        previous = resident.active
        cost = resident.activate_(task["id"], delta)
        if cost.bytes_moved:
            self._note_switch(task, previous, cost.seconds, cost.bytes_moved, found, at)
        return cost

    def _activate_compiled_2_4(self, task: dict[str, Any], resident: ResidentModel,
                               at: float) -> tuple[CompiledBase, SwitchCost]:
        """The task on its base's one cusparselt model (built on first use from this task's plan): its delta written
        into the resident base first, whose weights the changed layers are then recompressed from."""
        cost = self._activate(task, resident, at)
        key, layers = base_key(task), self._layers[task["id"]]
        compiled = self._compiled_2_4.get(key)
        if compiled is None:
            with self.blobs.open(task["compiled_blob"]) as stored:  # verified against its digest as it is read
                choices = plan_choices(stored.read(), f"task {task['id']}'s cusparselt plan")
            compiled = self._compiled_2_4[key] = CompiledBase(resident, choices, task["id"], layers)
            return compiled, cost
        try:
            recompressed = compiled.switch_(task["id"], layers)
        except Exception:  # half-switched: rebuilt from the resident base on the next request
            del self._compiled_2_4[key]
            raise
        return compiled, SwitchCost(cost.seconds + recompressed.seconds, cost.bytes_moved + recompressed.bytes_moved)

    def _resident(self, task: dict[str, Any]) -> ResidentModel:
        key = base_key(task)
        if key not in self._bases:
            loaded = load_model(task["base_model"], 2, device=self.device, seed=task["seed"],
                                sources=ModelSources.from_settings(self.settings), **task["model_options"])
            self._bases[key] = ResidentModel(loaded.model, loaded.preprocess, self.device)
        return self._bases[key]

    def _load_delta(self, task: dict[str, Any]) -> PlacedDelta:
        with self.blobs.open(task["delta_blob"]) as stored:  # verified against its digest as it is read
            data = stored.read()
        source = f"the delta of task {task['id']}"
        delta = parse_delta(data, source)
        self._layers[task["id"]] = TaskLayers.of(delta)  # what a compiled base's switch to it rewrites
        return self._resident(task).place(delta, source)

    def _note_switch(self, task: dict[str, Any], previous: Optional[str], seconds: float, moved: int,
                     found: str, at: float) -> None:
        self.switches += 1
        self._rows[task["id"]] = task
        self._transitions[(self._last_task, task["id"])] += 1
        self._last_task = task["id"]
        self._stats.switch(task["id"], seconds, at)
        self._unflushed = True
        self._switch_log.append({"at": at, "base": base_key(task), "from_task": previous,
                                 "to_task": task["id"], "seconds": seconds, "bytes_moved": moved, "cache": found})

    def _flush_switches(self, db: Any, force: bool) -> None:
        """The switch log and the per-minute statistics into SQLite, at most once a second (off the switch path)."""
        if force or time.monotonic() - self._last_flush >= SWITCH_FLUSH_S:
            try:
                records.record_switches(db, self._switch_log)
                records.record_minutes(db, self._stats.rows())
            except Exception:  # a full disk or a locked database costs these records, never a prediction
                log.exception("could not record %d task switches and the serving statistics", len(self._switch_log))
            self._switch_log, self._last_flush, self._unflushed = [], time.monotonic(), False

    def _prefetch(self) -> None:
        """Load the task most often switched to after the active one, if it is not cached."""
        followers = [(n, to) for (frm, to), n in self._transitions.items() if frm == self._last_task and to in self._rows]
        if not followers:
            return
        _, likely = max(followers)
        if likely in self.cache:
            return
        try:
            self.cache.put(likely, self._load_delta(self._rows[likely]), prefetched=True)
        except EdgedError as exc:
            log.warning("prefetch of task %s failed: %s", likely, exc.message)


def _idle() -> None:
    """Nothing to do: the wait for a request ended so that the records waiting are written."""


def _unavailable(task: dict[str, Any], exc: Exception) -> EdgedError:
    log.error("task %s could not be activated", task["id"], exc_info=exc)
    return Unavailable(f"task {task['id']} could not be activated on its base model {task['base_model']!r}: "
                        f"{type(exc).__name__}: {exc}")

"""Predictions through a task's compiled artifact, where its job compiled one.

- `serving_route(task, device)`: which backend answers the task's predictions, and why it is the eager resident base
  when the job compiled something that cannot answer here. cusparselt tasks answer through one compiled model per
  resident base on CUDA (`edged.tasks.compiled_2_4`), eager on the resident base elsewhere. The API and the task
  server ask the same function, so `GET /v1/tasks/{id}` names the backend that predict uses.
- `CompiledRunner`: a loaded artifact, `logits(inputs) -> (N, classes)` CPU float32, like the resident base.
- `CompiledCache`: the runners of the tasks, least recently used dropped beyond a byte budget (artifact sizes:
  an onnxruntime session holds the model's initializers, an engine its weights), each loaded on first use from
  the task's blob, verified against its digest as it is read.

Only the task server's inference thread loads and runs these, as it does the resident bases.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor

from edged.compile.registry import BACKENDS
from edged.data.task import Inputs
from edged.devices import resolve_device
from edged.errors import Corrupt, EdgedError, NotFound, Unavailable
from edged.store.blobs import BlobStore

log = logging.getLogger(__name__)

EAGER = "eager"  # the resident base with the task's delta written in place
CUSPARSELT = "cusparselt"  # one compiled model per resident base, switched by recompression (edged.tasks.compiled_2_4)
RUNS_ARTIFACT = ("onnxruntime", "tensorrt")  # compile backends whose artifact predictions run through


@dataclass(frozen=True)
class Route:
    backend: str  # what answers: "eager", "cusparselt", "onnxruntime" or "tensorrt"
    reason: Optional[str] = None  # why eager answers a task whose job compiled an artifact; None otherwise


def serving_route(task: dict[str, Any], device: str) -> Route:
    """The backend that answers `task` (a tasks row) here, where predictions run on `device` (the setting)."""
    compiled = task.get("compiled_backend")
    if compiled is None:
        return Route(EAGER)
    if compiled == "eager":
        return Route(EAGER, "the job's eager artifact is the same PyTorch model: served on the resident base")
    if compiled == CUSPARSELT and not _serves_on_cuda(device):
        return Route(EAGER, f"cusparselt needs the daemon to serve on a CUDA GPU (device {device!r} is not one here): "
                            "served eager on the resident base")
    if compiled not in (CUSPARSELT, *RUNS_ARTIFACT):
        return Route(EAGER, f"no runtime for {compiled!r} artifacts: served eager")
    usable, why = runtime_probe(compiled)
    if not usable:
        return Route(EAGER, f"{compiled} cannot run here ({why}): served eager on the resident base")
    return Route(compiled)


def _serves_on_cuda(device: str) -> bool:
    try:
        return resolve_device(device).type == "cuda"
    except EdgedError:  # a device that cannot serve here: the daemon refuses it at start, the route says eager
        return False


@functools.lru_cache(maxsize=None)
def runtime_probe(backend: str) -> tuple[bool, str]:
    """Whether the backend's runtime is here, once per process (it does not change while serving): onnxruntime
    found (not imported: the API asks this on its event loop), else the backend's own probe (TensorRT's runtime
    and a GPU)."""
    if backend == "onnxruntime":
        found = importlib.util.find_spec("onnxruntime") is not None
        return found, "onnxruntime is installed" if found else "onnxruntime is not installed (pip install onnxruntime)"
    try:
        probe: Callable[[], tuple[bool, str]] = importlib.import_module(BACKENDS[backend]).probe
        return probe()
    except Exception as exc:  # a broken install reads as unavailable, as in `edged doctor`
        return False, f"probe failed: {type(exc).__name__}: {exc}"


@dataclass
class CompiledRunner:
    backend: str
    nbytes: int  # the artifact's size: what it costs the cache
    run: Callable[[Inputs], Tensor]  # inputs -> (N, classes) logits, CPU float32

    def logits(self, inputs: Inputs) -> Tensor:
        """(N, classes) float32 on the CPU. Every failure (onnxruntime's exceptions are not RuntimeErrors, the
        runners raise EdgedErrors) becomes RuntimeError, which the micro-batch retries request by request and
        answers as that request's 422, as it does torch's: nothing escapes into the inference thread."""
        try:
            return self.run(inputs)
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise RuntimeError(f"{self.backend}: {message.splitlines()[0]}") from exc


def load_runner(task: dict[str, Any], blobs: BlobStore, threads: int) -> CompiledRunner:
    """The task's artifact loaded by its backend; Corrupt when its stored bytes are missing or changed, Unavailable
    when intact bytes do not load. Nothing stored is changed either way."""
    data = _artifact_bytes(task, blobs)
    backend, name = task["compiled_backend"], task["compiled_artifact"]
    try:
        run = _load(backend, data, threads)
    except Exception as exc:
        log.error("task %s: its compiled artifact %s did not load in %s", task["id"], name, backend, exc_info=exc)
        raise Unavailable(f"task {task['id']}'s compiled artifact {name} ({backend}) cannot be loaded here: "
                          f"{type(exc).__name__}: {str(exc)[:300]}",
                          detail={"task": task["id"], "artifact": name, "backend": backend}) from None
    return CompiledRunner(backend, len(data), run)


def _load(backend: str, data: bytes, threads: int) -> Callable[[Inputs], Tensor]:
    from edged.compile.recipe import predictor  # the compile stage's own `predict`: the job measured this path

    if backend == "onnxruntime":
        from edged.compile.onnx_export import OnnxRunner

        return predictor(OnnxRunner(data, threads))
    from edged.compile.tensorrt_builder import EngineRunner  # raises Unavailable without the TensorRT runtime

    return predictor(EngineRunner(data), "cuda")


def _artifact_bytes(task: dict[str, Any], blobs: BlobStore) -> bytes:
    name, digest = task["compiled_artifact"], task["compiled_blob"]
    what = f"task {task['id']}'s compiled artifact {name} (blob {digest})"
    try:
        with blobs.open(digest) as stored:  # raises Corrupt at the end if the bytes changed
            return stored.read()
    except NotFound:
        raise Corrupt(f"{what} is missing from the data directory; run the task's job again to compile it anew",
                      detail={"task": task["id"], "artifact": name, "blob": digest, "problem": "missing"}) from None
    except Corrupt as exc:
        raise Corrupt(f"{what} is corrupt in the store: its bytes no longer match their sha256; run the task's job "
                      f"again to compile it anew", detail={"task": task["id"], "artifact": name, "blob": digest,
                                                           "problem": "sha256 mismatch", **(exc.detail or {})}) from None


class CompiledCache:
    """Task id -> its loaded artifact, least recently used dropped once their bytes pass `budget_bytes`.
    An artifact larger than the whole budget is loaded for its micro-batch and not kept."""

    def __init__(self, budget_bytes: int, load: Callable[[dict[str, Any]], CompiledRunner]) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.loads = 0
        self._load = load
        self._entries: OrderedDict[str, CompiledRunner] = OrderedDict()
        self._warned: set[str] = set()  # tasks whose fallback to eager was logged

    def route(self, task: dict[str, Any], device: str) -> Route:
        """`serving_route(task, device)`, with a warning logged the first time a compiled task falls back to eager."""
        route = serving_route(task, device)
        if route.backend == EAGER and task.get("compiled_backend") in (CUSPARSELT, *RUNS_ARTIFACT) \
                and task["id"] not in self._warned:
            self._warned.add(task["id"])
            log.warning("task %s: %s", task["id"], route.reason)
        return route

    def get(self, task: dict[str, Any]) -> CompiledRunner:
        runner = self._entries.get(task["id"])
        if runner is not None:
            self._entries.move_to_end(task["id"])
            return runner
        runner = self._load(task)
        self.loads += 1
        if runner.nbytes > self.budget_bytes:
            log.warning("task %s: its %s artifact (%d bytes) is larger than the compiled cache's budget (%d bytes, "
                        "EDGED_COMPILED_CACHE_MB): loaded for each micro-batch", task["id"], runner.backend,
                        runner.nbytes, self.budget_bytes)
            return runner
        self._entries[task["id"]] = runner
        self.bytes += runner.nbytes
        while self.bytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.nbytes
        return runner

    def drop(self, task_id: str) -> None:
        runner = self._entries.pop(task_id, None)
        if runner is not None:
            self.bytes -= runner.nbytes

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self), "bytes": self.bytes, "budget_bytes": self.budget_bytes, "loads": self.loads}

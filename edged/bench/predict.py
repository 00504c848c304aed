"""Predict latency on one task through the real task server: the resident base (eager PyTorch, the task's delta
written in place) against the task's compiled onnxruntime artifact, at each batch size.

One real task: the bundled MobileNetV2 adapted to MNIST digits (taskedge, 0.1 %, one epoch; `edged bench switch`'s
first task, kept in the work directory), its merged model compiled with the `onnxruntime` backend as a job does. The
server holds the task twice, as published without and with a compiled artifact; one client submits a predict at a
time, alternating between the two so both see the same machine load. A predict's time is from submit to answer:
the queue hop, the base's preprocessing, the forward and the top-k (the micro-batch wait is 0 unless set).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file

from edged.bench.cli_lists import IMAGE_SIZE, count, field_count, field_float_list, field_number, int_list
from edged.bench.report import format_table, machine_summary, write_json
from edged.bench.predict_batching import COLUMNS as BATCHING_COLUMNS
from edged.bench.predict_batching import eager_task_row, measure_waits
from edged.bench.switch_tasks import SwitchSetup, cpu_setup
from edged.compile.registry import compile_model
from edged.data.bundled import mnist_5k
from edged.measure.timing import percentiles
from edged.models.loader import load_model
from edged.pipeline.config import AdaptConfig
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import migrate, open_db
from edged.tasks.inputs import Samples
from edged.tasks.server import TaskServer

WARMUP = 5
COLUMNS = [("backend", "backend"), ("batch", "batch"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
           ("samples_per_s", "samples/s"), ("max_abs_logit_diff", "max |logit - eager|")]


def compiled_artifact(setup: SwitchSetup, workdir: Path) -> Path:
    """The task's merged model compiled by the `onnxruntime` backend (as the job's compile stage does), kept."""
    task = setup.tasks[0]
    out = task.merged.parent / "compiled-onnxruntime"
    if not (out / "model.onnx").exists():
        assert setup.base is not None  # the CPU setup names its base
        loaded = load_model(setup.base["base_model"], len(task.classes), seed=setup.base["seed"],
                            **setup.base["model_options"])
        loaded.model.load_state_dict(load_file(str(task.merged)))
        print("compiling the task with onnxruntime", flush=True)
        compile_model(loaded.model.eval(), setup.sample.repeat(2, 1, 1, 1), "onnxruntime", out)  # (2, 3, H, W)
    return out / "model.onnx"


def _task_rows(setup: SwitchSetup, onnx: Path, blobs: BlobStore) -> dict[str, dict[str, Any]]:
    eager = eager_task_row(setup, blobs)
    return {"eager": eager,
            "onnxruntime": {**eager, "id": "onnxruntime", "compiled_backend": "onnxruntime",
                            "compiled_artifact": onnx.name, "compiled_blob": blobs.put_file(onnx)}}


def measure(setup: SwitchSetup, onnx: Path, workdir: Path, batches: list[int], predicts: int,
            max_wait_ms: float) -> list[dict[str, Any]]:
    """One row per (backend, batch): p50/p99 of `predicts` predicts, and the largest logit gap to eager."""
    settings = Settings(data_dir=workdir / "predict-server", device="cpu", predict_threads=torch.get_num_threads(),
                        predict_max_wait_ms=max_wait_ms, predict_batch_limit=max(batches))
    migrate(open_db(settings.db_path))
    blobs = BlobStore(settings.blobs_dir)
    tasks = _task_rows(setup, onnx, blobs)
    images = mnist_5k().x[-max(batches):]  # (B, 1, 28, 28) uint8: digits the task did not train on
    server = TaskServer(settings, blobs)
    server.start()
    rows = []
    try:
        for batch in batches:
            samples = Samples("image", list(images[:batch]))
            times: dict[str, list[float]] = {name: [] for name in tasks}
            answers = {}
            for i in range(WARMUP + predicts):
                for name, row in tasks.items():
                    start = time.perf_counter()
                    answers[name] = server.submit(row, samples, 1, True).result(timeout=120)
                    if i >= WARMUP:
                        times[name].append((time.perf_counter() - start) * 1000.0)
            eager = torch.tensor(answers["eager"]["logits"])
            for name in tasks:
                p50, _, p99, _ = percentiles(times[name])
                rows.append({"backend": answers[name]["backend"], "batch": batch, "p50_ms": p50, "p99_ms": p99,
                             "samples_per_s": batch * 1000.0 / p50, "predicts": predicts,
                             "max_abs_logit_diff": float((torch.tensor(answers[name]["logits"]) - eager).abs().max())})
    finally:
        server.stop()
    return rows


def _batching(setup: SwitchSetup, workdir: Path, args: argparse.Namespace, argv: Optional[list[str]]) -> int:
    rows = measure_waits(setup, workdir, args.waits, args.clients, args.predicts)
    print(f"\none-image predicts on one eager task ({setup.source}), {args.threads} thread(s), closed-loop clients")
    print(format_table(rows, BATCHING_COLUMNS))
    write_json(args.out, {"machine": machine_summary(), "task": setup.source, "threads": args.threads, "rows": rows,
                          "command": "edged bench predict " + " ".join(sys.argv[1:] if argv is None else argv)})
    print(f"\nwrote {args.out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench predict", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=count(), default=300, help="training samples of the task")
    parser.add_argument("--image-size", type=IMAGE_SIZE, default=64, help="MobileNetV2 input size")
    parser.add_argument("--batches", type=int_list(example="1,8,32"), default=[1, 8, 32],
                        help="comma-separated samples per predict (default 1,8,32)")
    parser.add_argument("--predicts", type=count(), default=200, help="predicts timed per backend and batch size")
    parser.add_argument("--max-wait-ms", type=field_number(Settings, "predict_max_wait_ms"), default=0.0,
                        help="the server's micro-batch wait")
    parser.add_argument("--threads", type=field_count(Settings, "predict_threads"), default=1,
                        help="CPU threads (the daemon's EDGED_PREDICT_THREADS)")
    parser.add_argument("--clients", type=int_list(example="1,8"), default=None,
                        help="instead: closed-loop clients of one-image predicts, comma-separated (e.g. 1,8), each "
                             "count at each --waits; the eager task only")
    parser.add_argument("--waits", type=field_float_list(Settings, "predict_max_wait_ms", example="0,5"), default=[0.0, 5.0],
                        help="micro-batch waits in ms for --clients, comma-separated, as EDGED_PREDICT_MAX_WAIT_MS takes "
                             "(default 0,5)")
    parser.add_argument("--seed", type=field_count(AdaptConfig, "seed"), default=0)
    parser.add_argument("--workdir", type=Path, help="keeps the adapted task and its ONNX file (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/predict.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="edged-predict-") as scratch:
        workdir = args.workdir or Path(scratch)
        setup = cpu_setup(workdir, 1, args.samples, args.image_size, args.seed)
        if args.clients:
            return _batching(setup, Path(tempfile.mkdtemp(dir=scratch)), args, argv)
        onnx = compiled_artifact(setup, workdir)
        rows = measure(setup, onnx, Path(tempfile.mkdtemp(dir=scratch)), args.batches, args.predicts, args.max_wait_ms)
    result = {"machine": machine_summary(), "task": setup.source, "threads": args.threads, "rows": rows,
              "command": "edged bench predict " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"\npredict latency on one task ({setup.source}), {args.threads} thread(s), {args.predicts} predicts each")
    print(format_table([{**r, "max_abs_logit_diff": f"{r['max_abs_logit_diff']:.1e}"} for r in rows], COLUMNS))
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

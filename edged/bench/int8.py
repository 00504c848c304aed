"""`edged bench int8`: onnxruntime float32 vs INT8 (and INT8 + 2:4) on MobileNetV2 + MNIST, on this CPU: validation
accuracy and p50/p99 latency at batch 1 and 32, printed as a table and written as JSON.

Two adaptations (taskedge, the same split and seed): dense, and 2:4-pruned with sparse recovery. Each merged model
is exported once as float32 ONNX and as explicit-quantization (QDQ) ONNX. The INT8 rows differ in where the
activation scales come from: the input ranges re-measured on the adapted model (what a job uses), the
calibration pass before training, and amax instead of the 99.99th percentile, so the choice is measured.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from edged.bench.adapt_pairs import subset
from edged.bench.cli_lists import IMAGE_SIZE, count, field_count, field_number
from edged.bench.report import format_table, machine_summary, write_json
from edged.compile.onnx_export import OnnxRunner, export_onnx
from edged.compile.qdq import export_qdq
from edged.data.bundled import mnist_5k
from edged.measure.latency import measure_latency
from edged.models.loader import load_model
from edged.pipeline.adapt import AdaptResult, adapt
from edged.pipeline.config import AdaptConfig
from edged.pipeline.split import LabelledInputs
from edged.train.evaluate import accuracy_of, batched_logits

MODEL = "mobilenet_v2"
COLUMNS = [("row", "model"), ("accuracy", "accuracy"), ("vs_fp32", "vs fp32 (points)"),
           ("p50_b1_ms", "p50 ms b1"), ("p99_b1_ms", "p99 ms b1"), ("p50_b32_ms", "p50 ms b32"),
           ("p99_b32_ms", "p99 ms b32")]


def latency_row(run: Callable[[Tensor], Tensor], val: LabelledInputs, iters: int) -> dict[str, float]:
    """p50/p99 ms of `run` on the first validation sample (batch 1) and the first 32 (batch 32)."""
    x = val.inputs
    assert isinstance(x, Tensor)  # images: (N, 3, S, S)
    row = {}
    for batch in (1, 32):
        stats = measure_latency(run, [x[:batch]], warmup=max(3, iters // 10), iters=iters, batch_size=batch)
        row[f"p50_b{batch}_ms"], row[f"p99_b{batch}_ms"] = stats.p50_ms, stats.p99_ms
    return row


def measure_onnx(path: Path, val: LabelledInputs, iters: int) -> dict[str, float]:
    runner = OnnxRunner(path)
    logits = batched_logits(runner, val.inputs, 64)  # (N val, classes)
    return {"accuracy": accuracy_of(logits, val.labels), **(latency_row(runner, val, iters) if iters else {})}


def adapted(task: Any, sparsity: str, options: dict[str, Any]) -> AdaptResult:
    loaded = load_model(MODEL, len(task.classes), seed=options["seed"], image_size=options["image_size"])
    config = AdaptConfig(method="taskedge", budget=options["budget"], epochs=options["epochs"],
                         batch_size=options["batch_size"], seed=options["seed"], device="cpu", sparsity=sparsity,
                         dense_reference=False, quantize="int8")
    return adapt(loaded.model, loaded.preprocess, task, config)


def rows_for(result: AdaptResult, label: str, out: Path, iters: int) -> list[dict[str, Any]]:
    """float32, then INT8 with each source of activation ranges, for one adapted model."""
    model, val = result.model.cpu().eval(), result.split.val if result.split else None
    assert val is not None and result.int8_ranges is not None and result.calibration is not None
    assert isinstance(val.inputs, Tensor)  # images: (N, 3, S, S)
    example = val.inputs[:2]
    fp32_path = export_onnx(model, example, out / f"fp32{label}.onnx")
    fp32: dict[str, Any] = {"row": f"fp32{label}", **measure_onnx(fp32_path, val, iters)}
    rows = [fp32]
    variants = [("", result.int8_ranges, "percentile"), (", calibration-pass ranges", result.calibration.ranges,
                                                         "percentile"), (", amax", result.int8_ranges, "amax")]
    for i, (suffix, ranges, use) in enumerate(variants):
        exported = export_qdq(model, example, ranges, out / f"int8{label}{i}.onnx", use=use)
        row: dict[str, Any] = {"row": f"int8{label}{suffix}", **measure_onnx(exported.path, val, iters if not suffix else 0)}
        rows.append(row)
    for row in rows:
        row["vs_fp32"] = 100 * (row["accuracy"] - fp32["accuracy"])
    return rows


def run_int8_bench(samples: int, options: dict[str, Any], iters: int) -> dict[str, Any]:
    task = subset(mnist_5k(), samples)
    rows: list[dict[str, Any]] = []
    drift = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity, label in (("none", ""), ("2:4", " + 2:4")):
            print(f"adapting ({sparsity}) ...", flush=True)
            result = adapted(task, sparsity, options)
            print(f"adapted: accuracy {result.metrics['accuracy_after']:.3f}, {result.metrics['stage_seconds']}",
                  flush=True)
            drift[sparsity] = result.int8_drift
            for row in rows_for(result, label, Path(tmp), iters):
                rows.append(row)
                print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
    return {"model": MODEL, "samples": len(task), **options, "iters": iters, "range_drift": drift,
            "threads": torch.get_num_threads(), "machine": machine_summary(), "rows": rows}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench int8", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=count(), default=5000)
    parser.add_argument("--epochs", type=field_count(AdaptConfig, "epochs"), default=3)
    parser.add_argument("--budget", type=field_number(AdaptConfig, "budget"), default=0.01, help="taskedge's trainable share")
    parser.add_argument("--batch-size", type=field_count(AdaptConfig, "batch_size"), default=32)
    parser.add_argument("--image-size", type=IMAGE_SIZE, default=64)
    parser.add_argument("--iters", type=count(), default=100, help="timed calls per latency (the other INT8 rows: none)")
    parser.add_argument("--seed", type=field_count(AdaptConfig, "seed"), default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-results/int8.json"))
    args = parser.parse_args(argv)
    options = {"epochs": args.epochs, "budget": args.budget, "batch_size": args.batch_size,
               "image_size": args.image_size, "seed": args.seed}
    print(format_table([], COLUMNS))
    result = run_int8_bench(args.samples, options, args.iters)
    print(f"\n{MODEL} on {result['samples']} MNIST digits at {args.image_size} px, taskedge {args.budget:g}, "
          f"{args.epochs} epochs, seed {args.seed}; {result['machine']}")
    print(format_table(result["rows"], COLUMNS))
    print(f"input ranges re-measured / calibration pass (99.99th percentile): {result['range_drift']}")
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

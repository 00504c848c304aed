"""`edged bench tokens`: task-relevant token selection (TR-PTS) on MiniLM-L6 + BBC News at 128 tokens:
accuracy, training and inference throughput with every token and with a few keep ratios, printed as a table
and written as JSON.

Each row adapts the same subset with the same split, seed and method; only the model options differ.
Training throughput is training samples x epochs / the train stage's seconds (which include each epoch's
validation pass, run with the same selection). Inference throughput is the adapted model's forward on one
batch of 128-token articles.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Optional

import torch

from edged.bench.adapt_pairs import subset
from edged.bench.report import format_table, machine_summary, write_json
from edged.data.bundled import bbc_news
from edged.data.task import TaskData
from edged.measure.timing import time_cpu
from edged.models.loader import load_model
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig

MODEL = "minilm-l6"
MAX_LENGTH = 128
DEFAULT_KEEPS = "1.0,0.5@1,0.25@1"  # token_keep@token_layer; 1.0 = every token (selection off)

COLUMNS = [("setting", "token selection"), ("accuracy", "accuracy"), ("accuracy_delta", "Δ points"),
           ("train_samples_per_s", "train samples/s"), ("train_speedup", "train x"),
           ("infer_samples_per_s", "infer samples/s"), ("infer_speedup", "infer x")]


def parse_keeps(text: str) -> list[dict[str, Any]]:
    """'1.0,0.5@1,32@0' -> model options: token_keep (a fraction or a count), token_layer when given."""
    settings = []
    for item in text.split(","):
        keep, _, layer = item.partition("@")
        options: dict[str, Any] = {"token_keep": float(keep) if "." in keep else int(keep)}
        if layer:
            options["token_layer"] = int(layer)
        settings.append(options)
    return settings


def run_setting(task: TaskData, options: dict[str, Any], config: AdaptConfig, infer_batch: int) -> dict[str, Any]:
    loaded = load_model(MODEL, len(task.classes), seed=config.seed, max_length=MAX_LENGTH, **options)
    result = adapt(loaded.model, loaded.preprocess, task, config)
    m = result.metrics
    epochs = len(result.history)
    spread = torch.linspace(0, len(task) - 1, min(infer_batch, len(task))).long()  # several classes: a valid task
    batch = loaded.preprocess(task.subset(spread))
    timing = time_cpu(lambda: result.model(batch), batch=infer_batch, warmup=3, iters=10)  # a fresh model's first calls run slow
    keep = options["token_keep"]
    label = "all tokens" if keep == 1.0 else f"keep {keep} after layer {loaded.info.options['token_layer']}"
    return {"setting": label, "model_options": loaded.info.options, "accuracy": m["accuracy_after"],
            "accuracy_before": m["accuracy_before"], "epochs_run": epochs, "train_samples": m["train_samples"],
            "train_s": m["stage_seconds"]["train"],
            "train_samples_per_s": m["train_samples"] * epochs / m["stage_seconds"]["train"],
            "infer_samples_per_s": timing.items_per_s, "infer_p50_ms": timing.p50_ms}


def relative_to_first(rows: list[dict[str, Any]]) -> None:
    """Accuracy change (points) and speed-ups against the first row (every token)."""
    first = rows[0]
    for row in rows:
        row["accuracy_delta"] = 100 * (row["accuracy"] - first["accuracy"])
        row["train_speedup"] = row["train_samples_per_s"] / first["train_samples_per_s"]
        row["infer_speedup"] = row["infer_samples_per_s"] / first["infer_samples_per_s"]


def run_tokens_bench(samples: int, epochs: int, method: str, budget: float, keeps: list[dict[str, Any]], seed: int,
                     infer_batch: int) -> dict[str, Any]:
    task = subset(bbc_news(), samples)
    config = AdaptConfig(method=method, budget=budget, epochs=epochs, seed=seed, device="cpu", patience=epochs)
    rows = []
    for options in keeps:
        started = time.perf_counter()
        rows.append(run_setting(task, options, config, infer_batch))
        rows[-1]["wall_s"] = time.perf_counter() - started
        print(f"{rows[-1]['setting']}: accuracy {rows[-1]['accuracy']:.3f}, "
              f"train {rows[-1]['train_samples_per_s']:.2f}/s, infer {rows[-1]['infer_samples_per_s']:.2f}/s", flush=True)
    relative_to_first(rows)
    return {"model": MODEL, "max_length": MAX_LENGTH, "samples": len(task), "epochs": epochs, "method": method,
            "budget": budget, "seed": seed, "infer_batch": infer_batch, "machine": machine_summary(), "rows": rows}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench tokens", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600, help="a fixed random subset of BBC News articles")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--method", default="taskedge")
    parser.add_argument("--budget", type=float, default=0.01, help="trainable fraction of the backbone's weights")
    parser.add_argument("--keeps", default=DEFAULT_KEEPS,
                        help="comma-separated token_keep[@token_layer]; the first is the reference (use 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--infer-batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench-results/tokens.json"))
    args = parser.parse_args(argv)
    results = run_tokens_bench(args.samples, args.epochs, args.method, args.budget, parse_keeps(args.keeps),
                               args.seed, args.infer_batch)
    print(f"\n{MODEL}, BBC News: {results['samples']} articles, {MAX_LENGTH} tokens, {args.epochs} epochs, "
          f"{args.method} {args.budget:g}, seed {args.seed}, {results['machine']}")
    print(format_table(results["rows"], COLUMNS))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

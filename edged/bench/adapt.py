"""`edged bench adapt`: every method on the same pairs, split and seeds; accuracy mean ± std over the seeds,
trainable entries, % of the backbone and wall time per method, the issue's targets as met/missed, printed as
tables and written as JSON (every seed's raw row and the aggregates).

Pairs (edged.bench.adapt_pairs): `mnist` (MobileNetV2 + 5,000 MNIST digits, 64 px), `digits` (MobileNetV2 +
scikit-learn's 1,797 8 x 8 digits at 32 px) and `bbc` (MiniLM-L6 + the 2,225 BBC News articles, 128 tokens).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from edged.bench.adapt_pairs import PAIRS, Pair, subset, with_options
from edged.bench.adapt_rows import ROWS, BenchRow, lr_grid_rows
from edged.bench.adapt_verdicts import aggregate, format_verdicts, verdicts
from edged.bench.cli_lists import IMAGE_SIZE, count, device_name, field_count, float_list, int_list
from edged.bench.report import format_table, machine_summary, write_json
from edged.pipeline.config import AdaptConfig

COLUMNS = [("row", "method"), ("accuracy", "accuracy % (mean ± std)"),
           ("trained_head", "head as trained, before its refit"), ("trainable", "trainable entries"),
           ("trainable_pct", "% of backbone"), ("wall_s_mean", "wall s (mean)")]


def selected_rows(only: Optional[list[str]], grid: Optional[tuple[list[float], list[float]]] = None,
                  labels: Optional[list[str]] = None) -> list[BenchRow]:
    """The rows to run, all or those whose method is in `only` and whose label is in `labels`, then the
    learning-rate grid's rows if asked for."""
    return [row for row in ROWS if (not only or row.method in only) and (not labels or row.label in labels)] + (
        lr_grid_rows(*grid) if grid else [])


def display(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "accuracy": f"{row['accuracy_mean']:.1f} ± {row['accuracy_std']:.1f}"}


def run_pair(pair: Pair, samples: Optional[int], seeds: list[int], base: dict[str, Any],
             rows: list[BenchRow]) -> dict[str, Any]:
    """Every row on every seed (a row's seeds together, so its aggregate prints as soon as it is done)."""
    task = subset(pair.load(), samples)
    runs = []
    for row in rows:
        for seed in seeds:
            runs.append({"seed": seed, **row.run(pair, task, {**base, "seed": seed})})
        print(format_table([display(r) for r in aggregate(runs)[-1:]], COLUMNS).splitlines()[-1], flush=True)
    return {"pair": pair.name, "model": pair.model, "model_options": pair.model_options, "samples": len(task),
            "seeds": seeds, **base, "runs": runs, "aggregates": aggregate(runs)}


parse_seeds = int_list(minimum=0, distinct=True, example="0,1,2")
_rates = float_list(0.0, 1.0, open_minimum=True, example="0.001,0.005,0.02")


def parse_grid(text: str) -> tuple[list[float], list[float]]:
    """`LRS:HEAD_LRS`, each comma-separated, e.g. 0.001,0.005,0.02:0.001,0.01."""
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not LRS:HEAD_LRS; accepted: two comma-separated lists of rates "
                                         "in (0, 1] joined by ':', e.g. 0.001,0.005,0.02:0.001,0.01")
    return _rates(parts[0]), _rates(parts[1])


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edged bench adapt", description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=[*PAIRS, "all"], default="mnist")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="comma-separated training seeds")
    parser.add_argument("--samples", type=count(), help="use a fixed random subset of this many samples (default: all)")
    parser.add_argument("--epochs", type=field_count(AdaptConfig, "epochs"), default=3)
    parser.add_argument("--batch-size", type=field_count(AdaptConfig, "batch_size"), default=32)
    parser.add_argument("--image-size", type=IMAGE_SIZE, help="input resolution of the image pairs (default: the pair's)")
    # check_max_length's floor; its ceiling is the tokenizer's, known once the model loads
    parser.add_argument("--max-length", type=count(2), help="token limit of the text pair (default: 128)")
    parser.add_argument("--device", type=device_name, default="auto")
    parser.add_argument("--methods", help="comma-separated subset of methods to run (e.g. taskedge,lora,taso_lora)")
    parser.add_argument("--rows", help="comma-separated row labels to run, e.g. 'taskedge 0.1%%,LoRA r=8' (with "
                        "--methods: the rows both select)")
    parser.add_argument("--lr-grid", type=parse_grid, help="also run taskedge 0.1 %% at each fixed (lr, head_lr) of "
                        "LRS:HEAD_LRS (e.g. 0.001,0.005,0.02:0.001,0.01), to compare the automatic rates with")
    parser.add_argument("--no-bn-reestimate", action="store_true",
                        help="keep the BatchNorm statistics training leaves (no re-estimation after training)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/adapt.json"))
    args = parser.parse_args(argv)
    known = sorted({row.method for row in ROWS})
    unknown = sorted(set(args.methods.split(",")) - set(known)) if args.methods else []
    if unknown:
        parser.error(f"--methods names no row for {', '.join(unknown)}; accepted: {', '.join(known)}")
    labels = [row.label for row in ROWS]
    unknown = [label for label in args.rows.split(",") if label not in labels] if args.rows else []
    if unknown:
        parser.error(f"--rows names no row {', '.join(map(repr, unknown))}; accepted: {', '.join(labels)}")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    base = {"epochs": args.epochs, "batch_size": args.batch_size, "device": args.device,
            "reestimate_batchnorm": not args.no_bn_reestimate}
    rows = selected_rows(args.methods.split(",") if args.methods else None, args.lr_grid,
                         args.rows.split(",") if args.rows else None)
    results: dict[str, Any] = {"machine": machine_summary()}
    for name in PAIRS if args.pair == "all" else [args.pair]:
        pair = with_options(PAIRS[name], args.image_size, args.max_length)
        print(f"\n== {name}: {pair.model} {pair.model_options}, seeds {args.seeds} ==")
        print(format_table([], COLUMNS))
        results[name] = run_pair(pair, args.samples, args.seeds, base, rows)
        print(f"\n{name}: {results[name]['samples']} samples, {args.epochs} epochs, seeds {args.seeds}, "
              f"{results['machine']}")
        print(format_table([display(r) for r in results[name]["aggregates"]], COLUMNS))
    results["verdicts"] = verdicts({name: r["aggregates"] for name, r in results.items() if name in PAIRS})
    print("\n" + format_verdicts(results["verdicts"]))
    write_json(args.out, results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

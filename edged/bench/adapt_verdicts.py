"""Seeds to mean ± std per row, and the issue's targets checked on those aggregates.

Targets (issue 14), per pair:
- taskedge at <= 0.1 % of the backbone within 1 point of LoRA r=8 (mean accuracy);
- taskedge above random and above magnitude by more than the seeds' spread (the two rows' stds added);
- taso_lora at LoRA r=1's count (within the stated tolerance) at or above LoRA r=1;
- taskedge at its automatic learning rates within 0.5 points of the best fixed (lr, head_lr) of `--lr-grid`.
A target whose rows were not run reads "not run", never met.
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

from edged.bench.adapt_rows import COUNT_TOLERANCE, LORA_1, LORA_8, MAGNITUDE, RANDOM, TASKEDGE, TASO_LORA
from edged.bench.report import mean_std

WITHIN_POINTS = 1.0  # accuracy points taskedge may trail LoRA r=8 by
AUTO_WITHIN_POINTS = 0.5  # accuracy points the automatic rates may trail the grid's best by
MAX_TASKEDGE_PCT = 0.1  # % of the backbone


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label over its seeds, in first-seen order: accuracy mean and sample std (0 for one seed), the
    same for the head as training left it where the row refit its head (`accuracy_trained_head`, else None),
    trainable entries and % (the same for every seed; the largest is kept), wall time mean."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_label.setdefault(run["row"], []).append(run)
    rows = []
    for label, seeds in by_label.items():
        accuracy = [100 * r["accuracy"] for r in seeds]  # in points
        rows.append({"row": label, "method": seeds[0]["method"], "seeds": len(seeds),
                     "accuracy_mean": statistics.fmean(accuracy),
                     "accuracy_std": statistics.stdev(accuracy) if len(seeds) > 1 else 0.0,
                     "trained_head": _mean_std([r.get("accuracy_trained_head") for r in seeds]),
                     "trainable": max(r["trainable"] for r in seeds),
                     "trainable_pct": max(r["trainable_pct"] for r in seeds),
                     "wall_s_mean": statistics.fmean(r["wall_s"] for r in seeds)})
    return rows


def _mean_std(values: list[Optional[float]]) -> Optional[str]:
    """'mean ± std' in points of accuracies given as fractions, or None where a seed has none."""
    if any(v is None for v in values):
        return None
    return mean_std([100 * float(v) for v in values if v is not None])


def _verdict(key: str, target: str, pair: str, met: Optional[bool], detail: str) -> dict[str, Any]:
    return {"key": key, "target": target, "pair": pair, "met": met, "detail": detail}


def _accuracy(row: dict[str, Any]) -> str:
    return f"{row['accuracy_mean']:.1f} ± {row['accuracy_std']:.1f}"


def _near_lora_8(pair: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    key, target = "near_lora_8", f"taskedge <= {MAX_TASKEDGE_PCT} % within {WITHIN_POINTS:g} point of LoRA r=8"
    if TASKEDGE not in rows or LORA_8 not in rows:
        return _verdict(key, target, pair, None, "not run")
    te, lora = rows[TASKEDGE], rows[LORA_8]
    gap = lora["accuracy_mean"] - te["accuracy_mean"]
    # the budget rounds up to a whole entry (MiniLM: 0.1 % is 10,616.8 entries, trained as 10,617 = 0.100002 %)
    met = round(te["trainable_pct"], 3) <= MAX_TASKEDGE_PCT and gap <= WITHIN_POINTS
    return _verdict(key, target, pair, met, f"taskedge {_accuracy(te)} at {te['trainable_pct']:.3f} % vs LoRA r=8 "
                                       f"{_accuracy(lora)}: {_behind_or_ahead(gap)}")


def _behind_or_ahead(gap: float) -> str:
    """`gap` = the reference's mean accuracy minus taskedge's, in points."""
    return f"{gap:+.1f} points behind" if gap >= 0 else f"{-gap:.1f} points ahead"


def _above(pair: str, rows: dict[str, dict[str, Any]], other: str) -> dict[str, Any]:
    name = other.split()[0]
    key, target = f"above_{name}", f"taskedge above {name} by more than the seeds' spread"
    if TASKEDGE not in rows or other not in rows:
        return _verdict(key, target, pair, None, "not run")
    te, base = rows[TASKEDGE], rows[other]
    margin = te["accuracy_mean"] - base["accuracy_mean"]
    spread = te["accuracy_std"] + base["accuracy_std"]
    met = te["seeds"] > 1 and margin > spread
    return _verdict(key, target, pair, met, f"taskedge {_accuracy(te)} vs {other} {_accuracy(base)}: "
                                       f"margin {margin:+.1f} points, spread {spread:.1f} ({te['seeds']} seeds)")


def _taso_vs_lora_1(pair: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    key, target = "taso_lora_vs_lora_1", "taso_lora >= LoRA r=1 at equal count"
    if TASO_LORA not in rows or LORA_1 not in rows:
        return _verdict(key, target, pair, None, "not run")
    taso, lora = rows[TASO_LORA], rows[LORA_1]
    equal = lora["trainable"] * (1 - COUNT_TOLERANCE) <= taso["trainable"] <= lora["trainable"]
    met = equal and taso["accuracy_mean"] >= lora["accuracy_mean"]
    return _verdict(key, target, pair, met, f"taso_lora {_accuracy(taso)} with {taso['trainable']:,} entries vs LoRA r=1 "
                                       f"{_accuracy(lora)} with {lora['trainable']:,}"
                                       + ("" if equal else f" (counts differ by more than {COUNT_TOLERANCE:.0%})"))


def _auto_near_grid(pair: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    key, target = "auto_near_grid", f"taskedge's automatic rates within {AUTO_WITHIN_POINTS:g} points of the grid's best"
    grid = [row for label, row in rows.items() if label.startswith(f"{TASKEDGE} lr=")]
    if TASKEDGE not in rows or not grid:
        return _verdict(key, target, pair, None, "not run")
    auto, best = rows[TASKEDGE], max(grid, key=lambda row: row["accuracy_mean"])
    gap = best["accuracy_mean"] - auto["accuracy_mean"]
    return _verdict(key, target, pair, gap <= AUTO_WITHIN_POINTS, f"auto {_accuracy(auto)} vs the grid's best "
                    f"({best['row']}) {_accuracy(best)}: {_behind_or_ahead(gap)}, {len(grid)} grid settings")


def verdicts(aggregates: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every target on every pair, from each pair's aggregated rows."""
    out = []
    for pair, pair_rows in aggregates.items():
        rows = {r["row"]: r for r in pair_rows}
        out += [_near_lora_8(pair, rows), _above(pair, rows, RANDOM), _above(pair, rows, MAGNITUDE),
                _taso_vs_lora_1(pair, rows), _auto_near_grid(pair, rows)]
    return out


def format_verdicts(results: list[dict[str, Any]]) -> str:
    marks = {True: "met", False: "MISSED", None: "not run"}
    return "\n".join(f"[{marks[v['met']]}] {v['pair']}: {v['target']}: {v['detail']}" for v in results)

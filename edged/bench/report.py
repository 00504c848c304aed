"""Shared by the benchmarks: the machine a result came from, plain-text tables, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import Any, Optional

import torch


def machine_summary() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}")
    return info


def mean_std(values: list[float]) -> str:
    """'mean ± sample std' to one decimal (std 0 for one value)."""
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """columns: (key, heading). Floats keep 3 significant decimals; None prints as '-'."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(head), *(len(r[i]) for r in cells)) if cells else len(head) for i, (_, head) in enumerate(columns)]
    lines = [" | ".join(head.ljust(w) for (_, head), w in zip(columns, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_json(path: Optional[Path], payload: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)

"""`edged bench align`: what aligning masks across tasks costs in accuracy and saves in blocks.

Real tasks on one base (MobileNetV2 and MNIST-5k by default: the ten digits, even/odd, small/large, mod 3 and
mod 4, each its own label grouping of the same images) are adapted one after another, twice: unaligned, and
aligned (`align_strength`) to the blocks the earlier tasks use. Per task: validation accuracy both ways, and
the union of 1 x 16 row blocks over the tasks so far, which is what a switch between them must touch.
The 2:4 part (`edged.bench.align_2_4`) adapts the same tasks pruned to 2:4: each with its own pattern, and
with one pattern shared by all (the first task's, or from every task's combined importance).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import torch

from edged.bench.cli_lists import IMAGE_SIZE, count, device_name, field_count, field_number
from edged.bench.report import format_table, machine_summary, write_json
from edged.data.bundled import mnist_5k
from edged.models.loader import load_model
from edged.pipeline.adapt import AdaptResult, adapt
from edged.pipeline.config import AdaptConfig
from edged.bench import align_2_4
from edged.bench.align_tasks import GROUPINGS, grouping_task
from edged.sparse.blocks import blocks_of_mask, count_blocks, union_blocks

def run(model: str, samples: int, image_size: int, epochs: int, budget: float, strength: float,
        device: str, tasks: list[str]) -> list[dict]:
    digits = mnist_5k().subset(torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:samples])
    rows: list[dict] = []
    used: dict[str, list[dict[str, torch.Tensor]]] = {"unaligned": [], "aligned": []}  # per mode: earlier tasks' blocks
    for grouping in tasks:
        task = grouping_task(digits, grouping)
        row: dict = {"task": grouping, "classes": len(task.classes)}
        for mode, mode_strength in (("unaligned", 0.0), ("aligned", strength)):
            loaded = load_model(model, len(task.classes), seed=0, image_size=image_size)
            config = AdaptConfig(method="taskedge", budget=budget, epochs=epochs, lr=0.01, head_lr=0.01,
                                 device=device, align_strength=mode_strength)
            started = time.perf_counter()
            earlier = union_blocks(used[mode]) if used[mode] else None
            result = adapt(loaded.model, loaded.preprocess, task, config, aligned_blocks=earlier)
            used[mode].append(_blocks(result))
            row[f"accuracy_{mode}"] = result.metrics["accuracy_after"]
            row[f"union_blocks_{mode}"] = count_blocks(union_blocks(used[mode]))
            row[f"wall_s_{mode}"] = time.perf_counter() - started
        rows.append(row)
    return rows


def _blocks(result: AdaptResult) -> dict[str, torch.Tensor]:
    """Layer -> blocks of the entries the sparse adaptation trained (its changed indices, as the delta holds)."""
    weights = dict(result.model.named_parameters())
    out = {}
    for name, indices in result.adaptation.changed.items():
        if indices is None or name not in weights:
            continue
        mask = torch.zeros(weights[name].numel(), dtype=torch.bool)
        mask[indices.cpu()] = True
        out[name] = blocks_of_mask(mask.view(weights[name].shape))
    return out


COLUMNS = [("task", "task"), ("classes", "classes"), ("accuracy_unaligned", "acc unaligned"),
           ("accuracy_aligned", "acc aligned"), ("union_blocks_unaligned", "union blocks unaligned"),
           ("union_blocks_aligned", "union blocks aligned")]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench align", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2", help="registered image model (default: mobilenet_v2)")
    parser.add_argument("--samples", type=count(), default=2000, help="MNIST digits per task (default: 2000)")
    parser.add_argument("--image-size", type=IMAGE_SIZE, default=64, help="input size (default: 64)")
    parser.add_argument("--epochs", type=field_count(AdaptConfig, "epochs"), default=2, help="epochs per task (default: 2)")
    parser.add_argument("--budget", type=field_number(AdaptConfig, "budget"), default=0.001,
                        help="trainable fraction (default: 0.001)")
    parser.add_argument("--strength", type=field_number(AdaptConfig, "align_strength"), default=4.0,
                        help="align_strength of the aligned run (default: 4)")
    parser.add_argument("--tasks", default=",".join(GROUPINGS), help=f"comma-separated, of {', '.join(GROUPINGS)}")
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--part", choices=("all", "blocks", "2:4"), default="all",
                        help="aligned vs unaligned blocks, 2:4 own vs shared pattern, or both (default: all)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in GROUPINGS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; accepted: {', '.join(GROUPINGS)}")
    payload: dict = {"machine": machine_summary(), "args": vars(args)}
    if args.part in ("all", "blocks"):
        payload["rows"] = run(args.model, args.samples, args.image_size, args.epochs, args.budget, args.strength,
                              args.device, tasks)
        print(format_table(payload["rows"], COLUMNS))
    if args.part in ("all", "2:4"):
        payload["rows_2_4"] = align_2_4.run(args.model, args.samples, args.image_size, args.epochs, args.budget,
                                            args.device, tasks)
        print(format_table(payload["rows_2_4"], align_2_4.COLUMNS))
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

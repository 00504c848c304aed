"""`edged bench prune`: what 2:4 costs on the default pair, and what sparse recovery wins back.

Rows (MobileNetV2 + MNIST-5k, same split and seed): the dense adapted model (taskedge, 0.1 %); that model
pruned to 2:4 one-shot by |W| and by task importance |W| * ||X||_2 (calibrated on the adapted model),
without any recovery; and the 2:4 pipeline (prune the base by task importance, then sparse training
restricted to the kept positions), with labels only and with distillation from the dense reference
(the job's `dense_reference` + `distill_weight`). Goal: 2:4-adapted within 1 point of dense-adapted.
The recovery rows also give the sizes of the job's outputs: its delta.safetensors and merged.safetensors.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from edged.pipeline.config import AdaptConfig
from edged.pipeline.adapt import AdaptResult, adapt
from edged.pipeline.outputs import write_outputs
from edged.bench.adapt_pairs import subset
from edged.bench.cli_lists import count, device_name, field_count, field_float_list
from edged.bench.report import format_table, machine_summary, write_json
from edged.calibrate import calibrate
from edged.data.bundled import mnist_5k
from edged.data.task import Inputs, num_samples
from edged.devices import resolve_device
from edged.methods.base import TaskBatches, backbone_layers
from edged.methods.taskedge import importance
from edged.models.loader import load_model
from edged.sparse.nm import prune_2_4_, recalibrate_batchnorm_
from edged.train.evaluate import accuracy

COLUMNS = [("row", "model"), ("accuracy", "accuracy"), ("delta_vs_dense", "vs dense-adapted (points)"),
           ("pruned_layers", "2:4 layers"), ("delta_mb", "delta.safetensors MB"), ("merged_mb", "merged.safetensors MB"),
           ("wall_s", "wall s")]


def _one_shot(adapted: torch.nn.Module, by: str, calib_inputs: Inputs, val: tuple[Inputs, torch.Tensor],
              device: torch.device) -> tuple[float, int, torch.nn.Module]:
    model = copy.deepcopy(adapted)
    layers = backbone_layers(model)
    if by == "magnitude":
        scores = {name: layer.weight.detach().abs() for name, layer in layers.items()}
    else:
        scores = importance(model, calibrate(model, calib_inputs, layers, micro_batch=64, device=device))
    report = prune_2_4_(model, scores, layers)
    return accuracy(model, val[0], val[1], batch_size=128, device=device), len(report.pruned), model


def _artifact_mb(result: AdaptResult, config: AdaptConfig) -> dict[str, float]:
    """The sizes of the job's two outputs for this adaptation: the task's delta and the merged model, in MB."""
    with tempfile.TemporaryDirectory() as directory:
        keep_masks = result.pruning.keep_masks if result.pruning else None
        paths = write_outputs(result.model, result.adaptation, Path(directory), config, "mobilenet_v2", keep_masks)
        return {f"{key}_mb": paths[key].stat().st_size / 1e6 for key in ("delta", "merged")}


def run_prune_bench(samples: Optional[int], epochs: int, batch_size: int, seed: int, device_name: str,
                    recovery_budgets: tuple[float, ...] = (0.001, 0.01),
                    distill_weights: tuple[float, ...] = (0.0, 0.5)) -> dict:
    task = subset(mnist_5k(), samples)  # the same subset for every seed
    device = resolve_device(device_name)
    base = {"method": "taskedge", "budget": 0.001, "epochs": epochs, "batch_size": batch_size, "seed": seed,
            "device": device_name}
    rows = []
    started = time.perf_counter()
    loaded = load_model("mobilenet_v2", len(task.classes), seed=seed, image_size=64)
    dense = adapt(loaded.model, loaded.preprocess, task, AdaptConfig(**base))
    dense_acc = dense.metrics["accuracy_after"]
    rows.append({"row": "dense adapted (taskedge 0.1%)", "accuracy": dense_acc, "pruned_layers": 0,
                 "wall_s": time.perf_counter() - started, **_artifact_mb(dense, AdaptConfig(**base))})
    train_task, val_task = task.split(0.2, seed)
    val = (loaded.preprocess(val_task), val_task.y)
    calib_inputs = loaded.preprocess(train_task.subset(torch.arange(min(512, len(train_task)))))
    for by, label in (("magnitude", "2:4 one-shot by |W|, no recovery"),
                      ("importance", "2:4 one-shot by |W|*||X||, no recovery")):
        started = time.perf_counter()
        acc, pruned, pruned_model = _one_shot(dense.model, by, calib_inputs, val, device)
        rows.append({"row": label, "accuracy": acc, "pruned_layers": pruned, "wall_s": time.perf_counter() - started})
    recalibrate_batchnorm_(pruned_model, TaskBatches(calib_inputs, torch.zeros(num_samples(calib_inputs)), 64, device))
    rows.append({"row": "2:4 one-shot by |W|*||X|| + BatchNorm re-estimated, no training",
                 "accuracy": accuracy(pruned_model, val[0], val[1], batch_size=128, device=device), "pruned_layers": pruned,
                 "wall_s": time.perf_counter() - started})
    for budget in recovery_budgets:
        for weight in distill_weights:
            started = time.perf_counter()
            loaded = load_model("mobilenet_v2", len(task.classes), seed=seed, image_size=64)
            config = AdaptConfig(**{**base, "budget": budget}, sparsity="2:4", dense_reference=weight > 0,
                                 distill_weight=weight)
            recovered = adapt(loaded.model, loaded.preprocess, task, config)
            how = f"distilled from the dense reference, weight {weight:g}" if weight > 0 else "labels only"
            sparsity = recovered.metrics["sparsity"]
            rows.append({"row": f"2:4 + sparse recovery at {100 * budget:g}%, {how}",
                         "accuracy": recovered.metrics["accuracy_after"],
                         "pruned_layers": len(sparsity["pruned_layers"]), "pattern_holds": sparsity["pattern_holds"],
                         "dense_reference": sparsity["accuracy_dense_adapted"],
                         "wall_s": time.perf_counter() - started, **_artifact_mb(recovered, config)})
    for row in rows:
        row["delta_vs_dense"] = 100 * (row["accuracy"] - dense_acc)
    return {"samples": len(task), "epochs": epochs, "seed": seed, "machine": machine_summary(),
            "ineligible_layers": recovered.metrics["sparsity"]["ineligible_layers"], "rows": rows}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench prune", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=count())
    parser.add_argument("--epochs", type=field_count(AdaptConfig, "epochs"), default=3)
    parser.add_argument("--batch-size", type=field_count(AdaptConfig, "batch_size"), default=32)
    parser.add_argument("--seed", type=field_count(AdaptConfig, "seed"), default=0)
    parser.add_argument("--device", type=device_name, default="auto")
    parser.add_argument("--recovery-budgets", type=field_float_list(AdaptConfig, "budget", example="0.001,0.01"),
                        default=[0.001, 0.01], help="budgets of the 2:4 recovery rows, comma-separated (default 0.001,0.01)")
    parser.add_argument("--distill-weights", type=field_float_list(AdaptConfig, "distill_weight", example="0,0.5"),
                        default=[0.0, 0.5],
                        help="distillation weights of the recovery rows (0: labels only; > 0 trains the dense reference too)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/prune.json"))
    args = parser.parse_args(argv)
    result = run_prune_bench(args.samples, args.epochs, args.batch_size, args.seed, args.device,
                              tuple(args.recovery_budgets), tuple(args.distill_weights))
    print(f"MobileNetV2 + MNIST, {result['samples']} samples, {args.epochs} epochs, seed {args.seed}, {result['machine']}")
    print(format_table(result["rows"], COLUMNS))
    print(f"layers left dense: {len(result['ineligible_layers'])} (grouped/depthwise convs, input sizes not divisible by 4)")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

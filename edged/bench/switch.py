"""`edged bench switch`: how fast the resident model moves between tasks, every way there is to do it, over a
uniform random and a Markov-skewed trace of task switches; p50/p99 per switch, bytes moved per switch, memory
with all tasks resident, cache hit rate and prefetch accuracy, and predict latency during a switch storm.

CPU (default): real tasks adapted on MobileNetV2 from the bundled digit sets. CUDA: ViT-B/16 with 50 tasks of
real delta shape (see `edged.bench.switch_tasks`). Rows: full-weight reload from a safetensors file, full-weight
copy from host memory, PEFT LoRA `set_adapter` and `hotswap_adapter`, edged cold / warm / hot, and edged through
a delta cache smaller than all tasks with the task server's first-order prefetch off and on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from edged.bench.cli_lists import IMAGE_SIZE, count, device_name, field_count, number
from edged.bench.report import format_table, machine_summary, write_json
from edged.bench.switch_rows import (CachedSwitch, Switch, edged_rows, full_file_row, full_host_row, markov_trace,
                                     WARMUP_SWITCHES, peft_rows, read_delta, time_trace, uniform_trace)
from edged.bench.switch_blocks import print_layouts, run_layouts
from edged.bench.switch_storm import lock_storm, server_storm
from edged.bench.switch_tasks import DIGIT_TASKS, SwitchSetup, cpu_setup, state_bytes, vit_setup
from edged.devices import resolve_device
from edged.pipeline.config import AdaptConfig
from edged.settings import Settings
from edged.tasks.resident import ResidentModel

COLUMNS = [("row", "row"), ("trace", "trace"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
           ("bytes_per_switch", "bytes/switch"), ("resident_x_model", "memory, N tasks (x model)"),
           ("hit_rate", "cache hits"), ("prefetch_accuracy", "prefetch acc.")]
STORM_COLUMNS = [("phase", "predict on one task"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                 ("p99_vs_steady", "p99 / steady p99"), ("switches_per_s", "switches/s")]


def _row(label: str, trace: str, timing: dict[str, Any], resident_bytes: float, model: int, **extra: Any) -> dict:
    return {"row": label, "trace": trace, **timing, "resident_x_model": resident_bytes / model, **extra}


def edged_table(setup: SwitchSetup, resident: ResidentModel, traces: dict[str, list[int]],
                cache_fraction: float) -> list[dict]:
    """The edged rows on each trace: cold, warm, hot, and through a smaller cache with prefetch off / on."""
    model = state_bytes(setup.model)
    deltas = [read_delta(setup, resident, t).nbytes for t in range(len(setup.tasks))]
    budget = int(cache_fraction * sum(deltas))
    warm = "edged warm (host memory, pinned)" if setup.device.type == "cuda" else "edged warm (= hot on the CPU)"
    labels = {"cold": ("edged cold (parse the delta file)", model + max(deltas)),
              "warm": (warm, model + sum(deltas)), "hot": ("edged hot (device cache)", model + sum(deltas))}
    rows = []
    for trace_name, trace in traces.items():
        for key, switch in edged_rows(setup, resident).items():
            label, memory = labels[key]
            rows.append(_row(label, trace_name, time_trace(switch, trace, setup.device), memory, model))
        for prefetch in (False, True):
            cached = CachedSwitch(setup, resident, budget, prefetch)
            timing = time_trace(cached.switch, trace, setup.device, after=cached.after)
            label = f"edged cache {cache_fraction:.0%} of tasks, prefetch {'on' if prefetch else 'off'}"
            rows.append(_row(label, trace_name, timing, model + budget, model, **cached.stats()))
    return rows


def baseline_table(setup: SwitchSetup, traces: dict[str, list[int]], workdir: Path, checkpoints: int) -> list[dict]:
    """PEFT LoRA and full-weight switching. Runs last: the full-weight rows overwrite the base's weights."""
    model, count = state_bytes(setup.model), len(setup.tasks)
    peft, adapter = peft_rows(setup, workdir)
    rows: list[dict] = []
    for trace_name, trace in traces.items():
        rows.append(_row("PEFT LoRA set_adapter (r=8)", trace_name, time_trace(peft["set_adapter"], trace, setup.device),
                         model + count * adapter, model))
        rows.append(_row("PEFT LoRA hotswap_adapter (r=8)", trace_name, time_trace(peft["hotswap"], trace, setup.device),
                         model + adapter, model))
    del peft
    host = "pinned host memory" if setup.device.type == "cuda" else "host memory"
    full: list[tuple[str, Switch, int]] = [
        ("full reload (safetensors file)", full_file_row(setup, checkpoints), model),
        (f"full copy ({host})", full_host_row(setup, checkpoints), model * (1 + count))]
    for label, switch, memory in full:
        for trace_name, trace in traces.items():
            rows.append(_row(label, trace_name, time_trace(switch, trace, setup.device), memory, model))
    return rows


def run_switch_bench(setup: SwitchSetup, switches: int, predicts: int, cache_fraction: float, checkpoints: int,
                     workdir: Path, seed: int) -> dict:
    count, model = len(setup.tasks), state_bytes(setup.model)
    traces = {"uniform": uniform_trace(count, switches, seed), "markov": markov_trace(count, switches, seed)}
    resident = ResidentModel(setup.model, setup.preprocess, setup.device)
    rows = edged_table(setup, resident, traces, cache_fraction)
    storm = lock_storm(setup, resident, predicts, seed)
    resident.deactivate_()
    storm += server_storm(setup, resident, workdir, predicts, seed)
    rows += baseline_table(setup, traces, workdir, checkpoints)
    deltas = [read_delta(setup, resident, t).nbytes for t in range(count)]
    memory = {"tasks": count, "model_bytes": model, "deltas_bytes": sum(deltas), "delta_bytes_mean": sum(deltas) / count,
              "ratio": (model + sum(deltas)) / model, "separate_models_ratio": count}
    return {"device": str(setup.device), "source": setup.source, "tasks": [t.name for t in setup.tasks],
            "switches_per_trace": switches, "seed": seed, "machine": machine_summary(), "rows": rows,
            "memory": memory, "storm": storm}


def print_report(result: dict, argv: list[str]) -> None:
    memory = result["memory"]
    print(f"\n$ edged bench switch {' '.join(argv)}\n{result['source']}; {memory['tasks']} tasks; "
          f"{result['switches_per_trace']} switches per trace; {result['machine']}")
    print(format_table(result["rows"], COLUMNS))
    print(f"\nmemory with {memory['tasks']} tasks resident: model {memory['model_bytes'] / 2**20:.1f} MiB + deltas "
          f"{memory['deltas_bytes'] / 2**20:.2f} MiB = {memory['ratio']:.4f}x one model "
          f"(separate models: {memory['separate_models_ratio']}x)\n")
    print(format_table(result["storm"], STORM_COLUMNS))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench switch", description=__doc__.splitlines()[0])
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--model", choices=("mobilenet_v2", "vit-b16"),
                        help="mobilenet_v2: real digit tasks (the CPU default); vit-b16: deltas of real shape (the CUDA "
                             "default)")
    # a trace switches to another task each time, so it needs two
    parser.add_argument("--tasks", type=count(2), help=f"number of tasks (default: 7 for mobilenet_v2, at most "
                        f"{len(DIGIT_TASKS)}; 50 for vit-b16)")
    parser.add_argument("--samples", type=count(), default=300, help="CPU: training samples per task")
    parser.add_argument("--image-size", type=IMAGE_SIZE, default=64, help="CPU: MobileNetV2 input size")
    # time_trace leaves the first WARMUP_SWITCHES switches untimed and needs one to time
    parser.add_argument("--switches", type=count(WARMUP_SWITCHES + 1),
                        default=300, help="switches per trace")
    parser.add_argument("--predicts", type=count(), default=200, help="predicts timed per storm phase")
    parser.add_argument("--cache-fraction", type=number(0.0, 1.0, open_minimum=True), default=0.5,
                        help="the prefetch rows' cache budget, as a share of all tasks' delta bytes")
    parser.add_argument("--full-checkpoints", type=count(), default=4,
                        help="distinct fine-tuned state dicts the full-weight rows cycle through")
    parser.add_argument("--threads", type=field_count(Settings, "predict_threads"),
                        help="CPU threads torch uses (default on the CPU: 1, the daemon's predict_threads default)")
    parser.add_argument("--seed", type=field_count(AdaptConfig, "seed"), default=0)
    parser.add_argument("--workdir", type=Path, help="keeps the adapted tasks between runs (default: a temp dir)")
    parser.add_argument("--layouts", action="store_true",
                        help="instead: how placed deltas are stored (entry-wise vs block-wise) on unaligned, aligned "
                             "and 2:4 tasks, on the CPU (--tasks per set, default 5)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/switch.json"))
    args = parser.parse_args(argv)
    device = torch.device("cpu") if args.layouts else resolve_device(args.device)  # --layouts runs on the CPU
    model = "mobilenet_v2" if args.layouts else args.model or ("vit-b16" if device.type == "cuda" else "mobilenet_v2")
    if model == "mobilenet_v2" and (args.tasks or 0) > len(DIGIT_TASKS):  # else cpu_setup would quietly take fewer
        parser.error(f"argument --tasks: {args.tasks} is more than the {len(DIGIT_TASKS)} digit tasks of mobilenet_v2; "
                     f"accepted: at most {len(DIGIT_TASKS)} with mobilenet_v2 or --layouts, more with vit-b16")
    if args.layouts:
        return _layouts(args, sys.argv[1:] if argv is None else argv)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    with tempfile.TemporaryDirectory(prefix="edged-switch-") as scratch:
        workdir = args.workdir or Path(scratch)
        if model == "vit-b16":
            setup = vit_setup(workdir, args.tasks or 50, args.full_checkpoints, device, args.seed)
        else:
            setup = cpu_setup(workdir, args.tasks or 7, args.samples, args.image_size, args.seed)
        result = run_switch_bench(setup, args.switches, args.predicts, args.cache_fraction,
                                  args.full_checkpoints, workdir, args.seed)
    print_report(result, sys.argv[1:] if argv is None else argv)
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


def _layouts(args: argparse.Namespace, argv: list[str]) -> int:
    torch.set_num_threads(args.threads or 1)
    with tempfile.TemporaryDirectory(prefix="edged-switch-") as scratch:
        result = run_layouts(args.workdir or Path(scratch), args.tasks or 5, args.samples, args.image_size,
                             args.switches, args.seed)
    print_layouts(result, argv)
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

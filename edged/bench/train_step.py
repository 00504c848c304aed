"""`edged bench train-step`: peak memory and time per training step of sparse-delta training vs PEFT LoRA
vs full fine-tuning on a ViT-B/16 (timm when installed, else edged's plain-torch ViT of the same shape),
random weights and data, fp16/bf16 autocast on CUDA. All methods measured in one run, same batch.

Per method: peak memory (total and above the weights), median step time, bytes of tensors saved for
backward (activations, parameters excluded), trainable entries and optimizer state.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.pipeline.config import AdaptConfig
from edged.bench.cli_lists import count, device_name, field_count, field_number, items
from edged.bench.report import format_table, machine_summary, write_json
from edged.bench.step_capture import captured_step, top_kernels, warm_up
from edged.bench.vit import VIT_B16, VitEncoder, VitShape, tiny_vit_shape
from edged.calibrate import calibrate
from edged.devices import resolve_device
from edged.measure.clocks import cuda_event_ms, wall_clock_ms
from edged.methods import all_methods, get_method
from edged.methods.base import ScoreConfig, TaskBatches, backbone_layers
from edged.methods.sparse_delta import prepare_sparse, select_mask
from edged.models.classifier import Classifier
from edged.train.loop import amp_dtype
from edged.train.recompute import POLICIES, check_policy, training_policy

COLUMNS = [("method", "method"), ("trainable", "trainable"), ("peak_mb", "peak MB"),
           ("peak_above_weights_mb", "above weights MB"),
           ("saved_activations_mb", "saved for backward MB"), ("optimizer_state_mb", "optimizer MB"),
           ("step_ms", "step ms (median)"), ("peak_vs_lora", "peak / LoRA"), ("peak_vs_full", "peak / full"),
           ("step_vs_lora", "step / LoRA"), ("step_vs_full", "step / full")]


def build_backbone(shape: VitShape, prefer_timm: bool) -> tuple[nn.Module, str]:
    if prefer_timm and shape == VIT_B16:
        try:
            import timm

            return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0), "timm vit_base_patch16_224"
        except ImportError:
            pass
    encoder = VitEncoder(shape)
    encoder.head = nn.Identity()
    return encoder, "edged plain-torch ViT"


def _saved_tensors(model: nn.Module, step) -> tuple[int, dict[str, float]]:
    """Bytes of distinct storages autograd saves during one forward (parameters excluded), and the
    largest groups by (dtype, last dimension) in MiB, which says which activations dominate."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[int, str]] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kind = f"{str(t.dtype).removeprefix('torch.')} [..., {t.shape[-1] if t.dim() else 1}]"
            seen[storage.data_ptr()] = (storage.nbytes(), kind)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    groups: dict[str, float] = {}
    for size, kind in seen.values():
        groups[kind] = groups.get(kind, 0.0) + size / 2**20
    top = dict(sorted(groups.items(), key=lambda kv: -kv[1])[:6])
    return sum(size for size, _ in seen.values()), top


def _prepare(method: str, model: Classifier, images: Tensor, labels: Tensor, budget: float, rank: int):
    config = AdaptConfig(method=method, budget=budget, lora_rank=rank)
    entry = get_method(method)
    batches = TaskBatches(images, labels, batch_size=images.shape[0], device=images.device)
    if entry.kind == "sparse":
        calibration = calibrate(model, images, backbone_layers(model), micro_batch=images.shape[0], device=images.device)
        scores = entry.function(model, batches, ScoreConfig(calibration=calibration))
        return prepare_sparse(method, model, select_mask(model, scores, config))
    return entry.function(model, batches, entry.options_for(config), None)


def measure_method(method: str, shape: VitShape, batch: int, device: torch.device, steps: int, budget: float,
                   rank: int, prefer_timm: bool, seed: int = 0, policy: str = "none", graph: bool = False,
                   profile: int = 0) -> dict:
    """One method's row under a recomputation `policy`; `graph`: the whole step (zero_grad, forward, backward,
    AdamW) replayed as one CUDA graph; `profile` > 0: print that many of one step's CUDA kernels by self time."""
    torch.manual_seed(seed)
    backbone, source = build_backbone(shape, prefer_timm)
    model = Classifier(backbone, shape.dim, 10, "image").to(device)
    images = torch.randn(batch, 3, shape.image, shape.image, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    adaptation = _prepare(method, model, images, labels, budget, rank)
    params = list(adaptation.parameters) + list(model.head.parameters())
    for p in model.head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-4, capturable=graph)
    dtype = amp_dtype(device, True)
    model.train()
    recompute = contextlib.ExitStack()  # the recomputation policy, for every step measured below
    recompute.enter_context(training_policy(model, policy, dtype))

    def forward_backward() -> None:
        # a graph replays the casts it captured: autocast's weight-cast cache would be freed under it
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=not graph):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        optimizer.step()

    warm_up(step, 3, side_stream=graph)  # kernels chosen, optimizer state allocated
    saved, saved_groups = _saved_tensors(model, forward_backward)
    optimizer.zero_grad(set_to_none=True)
    weights_mb = _sync_memory_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = captured_step(step) if graph else step
    times = cuda_event_ms(timed, steps) if device.type == "cuda" else wall_clock_ms(timed, steps)
    if profile:
        print(f"{method}{' (graph)' if graph else ''}: top {profile} CUDA kernels of one step")
        print(top_kernels(timed, profile))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    result = {"method": f"{method} (graph)" if graph else method, "model": source, "trainable": adaptation.entries,
              "peak_mb": peak,
              "peak_above_weights_mb": None if peak is None else peak - weights_mb,
              "saved_activations_mb": saved / 2**20, "optimizer_state_mb": state / 2**20,
              "saved_by_kind_mb": saved_groups, "step_ms": statistics.median(times), "step_ms_all": times,
              "policy": policy}
    recompute.close()
    return result


def _sync_memory_mb(device: torch.device) -> float:
    """Memory held between steps: weights, optimizer state, the model's buffers."""
    if device.type != "cuda":
        return 0.0
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device) / 2**20


def run_train_step_bench(methods: list[str], shape: VitShape, batch: int, device: torch.device, steps: int,
                         budget: float, rank: int, prefer_timm: bool = True, graph: bool = False,
                         profile: int = 0) -> dict:
    """Every method eagerly, then (with `graph`) every method again as one CUDA graph per step."""
    runs = [{"method": m, "graph": g, "profile": profile} for g in ((False, True) if graph else (False,)) for m in methods]
    rows = _measure_each(runs, shape, batch, device, steps, budget, rank, prefer_timm)
    by_method = {r["method"]: r for r in rows}
    for row in rows:
        suffix = " (graph)" if row["method"].endswith(" (graph)") else ""  # graph rows against graph rows
        for ref, key in (("lora", "peak_vs_lora"), ("full", "peak_vs_full")):
            if ref + suffix in by_method and row["peak_mb"] and by_method[ref + suffix]["peak_mb"]:
                row[key] = row["peak_mb"] / by_method[ref + suffix]["peak_mb"]
        for ref, key in (("lora", "step_vs_lora"), ("full", "step_vs_full")):
            if ref + suffix in by_method:
                row[key] = row["step_ms"] / by_method[ref + suffix]["step_ms"]
    return _result(rows, shape, batch, device, steps, budget, rank)


def _measure_each(runs: list[dict], shape: VitShape, batch: int, device: torch.device, steps: int, budget: float,
                  rank: int, prefer_timm: bool) -> list[dict]:
    """One `measure_method` row per run (its method and keyword options), each method's model freed before the
    next one is built."""
    rows = []
    for run in runs:
        rows.append(measure_method(shape=shape, batch=batch, device=device, steps=steps, budget=budget, rank=rank,
                                   prefer_timm=prefer_timm, **run))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _result(rows: list[dict], shape: VitShape, batch: int, device: torch.device, steps: int, budget: float,
            rank: int) -> dict:
    return {"shape": vars(shape), "batch": batch, "device": str(device), "steps": steps, "budget": budget,
            "lora_rank": rank, "machine": machine_summary(), "rows": rows}


POLICY_COLUMNS = [("method", "method"), ("policy", "policy"), ("peak_mb", "peak MB"),
                  ("saved_activations_mb", "saved for backward MB"), ("step_ms", "step ms (median)"),
                  ("peak_vs_full", "peak / full"), ("step_vs_full", "step / full")]
BASELINE_POLICIES = ("none", "checkpoint_blocks")  # full fine-tuning and LoRA: without and with checkpointing


def run_policy_bench(policies: list[str], shape: VitShape, batch: int, device: torch.device, steps: int,
                     budget: float, rank: int, prefer_timm: bool = True, graph: bool = False) -> dict:
    """The trade-off curve: taskedge under each recomputation policy, full fine-tuning and LoRA without and with
    block checkpointing; peak and step time against full fine-tuning without checkpointing (`graph`: every row's
    whole step replayed as one CUDA graph)."""
    runs = [{"method": "taskedge", "policy": p, "graph": graph} for p in policies]
    runs += [{"method": m, "policy": p, "graph": graph} for m in ("full", "lora") for p in BASELINE_POLICIES]
    rows = _measure_each(runs, shape, batch, device, steps, budget, rank, prefer_timm)
    full = next(r for r in rows if r["method"].split(" ")[0] == "full" and r["policy"] == "none")
    for row in rows:
        row["step_vs_full"] = row["step_ms"] / full["step_ms"]
        if row["peak_mb"] and full["peak_mb"]:
            row["peak_vs_full"] = row["peak_mb"] / full["peak_mb"]
    return _result(rows, shape, batch, device, steps, budget, rank)


def _policy_list(text: str) -> list[str]:
    """`--policies`: 'all' or a comma-separated list of recomputation policies."""
    try:
        return list(POLICIES) if text == "all" else [check_policy(p) for p in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _method_list(text: str) -> list[str]:
    """`--methods`: comma-separated registered methods."""
    known = all_methods()
    accepted = f"comma-separated methods of {', '.join(known)}"
    names = items(text, accepted)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(map(repr, unknown))}; accepted: {accepted}")
    return names


def _policies_main(args: argparse.Namespace, device: torch.device, shape: VitShape) -> int:
    """`--policies`: the policy table instead of the method table (its saved-for-backward column counts what
    autograd saves outside checkpointed regions, before compute_dtype's packing; the peak column sees both)."""
    result = run_policy_bench(args.policies, shape, args.batch, device, args.steps, args.budget, args.lora_rank,
                              prefer_timm=not args.no_timm, graph=args.graph)
    print(f"{result['rows'][0]['model']}, batch {args.batch}, {shape.image} px, {device}, {result['machine']}")
    print(format_table(result["rows"], POLICY_COLUMNS))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench train-step", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", type=_method_list, default=["taskedge", "lora", "full"],
                        help="comma-separated methods to time (default taskedge,lora,full)")
    parser.add_argument("--batch", type=count(), default=64)
    parser.add_argument("--steps", type=count(), default=10)
    parser.add_argument("--budget", type=field_number(AdaptConfig, "budget"), default=0.001)
    parser.add_argument("--lora-rank", type=field_count(AdaptConfig, "lora_rank"), default=8)
    parser.add_argument("--device", type=device_name, default="auto")
    parser.add_argument("--tiny", action="store_true", help="a tiny ViT (tests, CPU smoke runs)")
    parser.add_argument("--no-timm", action="store_true", help="use edged's plain-torch ViT even if timm is installed")
    parser.add_argument("--graph", action="store_true",
                        help="also time every method with its whole step captured in one CUDA graph (CUDA only); "
                        "with --policies, every policy row is timed that way instead of eagerly")
    parser.add_argument("--profile", type=count(0), default=0, metavar="N",
                        help="print the top N CUDA kernels of one step per method (torch.profiler)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/train_step.json"))
    parser.add_argument("--policies", type=_policy_list, help=f"'all' or some of {','.join(POLICIES)}: taskedge under each "
                        "recomputation policy, full fine-tuning and LoRA without and with checkpoint_blocks")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    for flag, wanted in (("--graph", args.graph), ("--profile", args.profile)):
        if wanted and device.type != "cuda":
            parser.error(f"{flag} needs a CUDA device, got --device {args.device} ({device})")
    if args.profile and args.policies:
        parser.error("--profile prints the method table's kernels: drop --profile, or --policies")
    shape = tiny_vit_shape() if args.tiny else VIT_B16
    if args.policies:
        return _policies_main(args, device, shape)
    result = run_train_step_bench(args.methods, shape, args.batch, device, args.steps, args.budget,
                                  args.lora_rank, prefer_timm=not args.no_timm, graph=args.graph,
                                  profile=args.profile)
    print(f"{result['rows'][0]['model']}, batch {args.batch}, {shape.image} px, {device}, {result['machine']}")
    print(format_table(result["rows"], COLUMNS))
    for row in result["rows"]:
        groups = ", ".join(f"{kind}: {mb:.0f}" for kind, mb in row["saved_by_kind_mb"].items())
        print(f"saved for backward, {row['method']} (MiB): {groups}")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

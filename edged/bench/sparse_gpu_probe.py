"""One GPU call: dense vs every 2:4 variant, per ViT-B/16 layer and end to end, each checked and isolated.

    python3 -m edged.bench.sparse_gpu_probe --out DIR [--budget-s 450] [--batches 1,8,32,128]

Per layer (qkv 768->2304, proj 768->768, fc1 768->3072, fc2 3072->768 at 197 tokens x batch), fp16:
  dense_graph        cuBLAS F.linear replayed from a CUDA graph (the baseline)
  dense_eager        the same, launched from Python
  torch_eager        torch's straightforward `to_sparse_semi_structured` weight (cuSPARSELt, default
                     kernel; PyTorch builds the cuSPARSELt plan on every call, so few iterations)
  cutlass_eager      the same with `_FORCE_CUTLASS` (torch's CUTLASS kernels are built for sm_8x)
  direct_eager/_graph     edged's SemiSparseLinear (own cuSPARSELt binding, plan built once, default kernel)
  tuned_graph        SemiSparseLinear with the fastest verified of cuSPARSELt's search and every alg id
End to end, a ViT-B/16-sized encoder from CUDA graphs: dense, every Linear sparse (tuned config),
and sparse only where the layer table says it wins. Every variant's output is checked against
dense fp16. Cases run in worker processes (`isolation.run_isolated`): one that fails or breaks
CUDA is recorded and the rest go on. Needs only torch and numpy. Prints two tables and writes
DIR/sparse_gpu_probe.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edged.bench.cli_lists import count, int_list, number
from edged.bench.vit import VIT_B16, VitEncoder, VitShape, prune_by_magnitude_
from edged.compile.cusparselt_lib import KernelConfig
from edged.compile.isolation import run_isolated, worker_main
from edged.compile.semi_structured import DTYPE, SemiSparseLinear, Shape, TorchSparseLinear, check_close, probe
from edged.compile.sparse_tuning import (
    GRAPH_REPEAT, MAX_SWEEP_ALG, LayerChoice, cuda_healthy, plan_layers, random_2_4_linear, sparsify_linears_,
)
from edged.measure.clocks import graph_replay
from edged.measure.energy import energy_per_item, gpu_power_source
from edged.measure.timing import time_cuda

LAYER_VARIANTS = ("dense_graph", "dense_eager", "direct_eager", "direct_graph", "torch_eager", "cutlass_eager")
TABLE_VARIANTS = (*LAYER_VARIANTS, "tuned_graph")  # tuned_graph comes from plan_layers
TORCH_PATH_ITERS = 3  # torch's own cuSPARSELt path rebuilds the plan per call (0.7-1.2 ms on the H100)
E2E_VARIANTS = ("dense", "sparse_all", "sparse_chosen", "dense_compiled", "sparse_chosen_compiled")
COMPILED_MIN_BATCH = 32  # torch.compile costs ~1 min per model and batch: only where it matters
WORKER = "edged.bench.sparse_gpu_probe"
E2E_TOL = 5e-2  # 12 blocks of fp16 rounding in a different order


@torch.inference_mode()
def layer_case(case: dict[str, Any]) -> dict[str, Any]:
    """Worker: one variant of one Linear shape at one batch; timing per call and error vs dense."""
    variant, tokens = case["variant"], case["tokens"]
    torch.manual_seed(0)
    layer = random_2_4_linear(case["out"], case["in"], bias=True)
    x = torch.randn(tokens, case["in"], device="cuda", dtype=DTYPE)  # (T, in)
    ref = layer(x)  # (T, out)
    iters, warmup = case["iters"], 20
    if variant.startswith("dense"):
        module: nn.Module = layer
    elif variant.startswith("direct"):
        module = SemiSparseLinear(layer.weight, layer.bias)
    elif variant.startswith("cutlass"):
        module = TorchSparseLinear(layer.weight, layer.bias, cutlass=True)
    else:
        module = TorchSparseLinear(layer.weight, layer.bias)
        iters, warmup = TORCH_PATH_ITERS, 1
    err = check_close(module(x), ref, variant)
    graph = variant.endswith("_graph")
    timing = time_cuda(lambda: module(x), case["batch"], warmup=warmup, iters=iters, cuda_graph=graph,
                       repeat=GRAPH_REPEAT if graph else 1)
    return {"ms": timing.p50_ms, "p95_ms": timing.p95_ms, "rel_err": err}


def vit_layers(s: VitShape) -> list[tuple[str, int, int]]:
    """(name, in, out) of the encoder block's Linears."""
    return [("qkv", s.dim, 3 * s.dim), ("proj", s.dim, s.dim), ("fc1", s.dim, s.mlp), ("fc2", s.mlp, s.dim)]


def _vit(shape: VitShape, batch: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = VitEncoder(shape)
    prune_by_magnitude_(model)
    images = torch.randn(batch, 3, shape.image, shape.image)
    return model.to("cuda", DTYPE).eval(), images.to("cuda", DTYPE)


def _plan(entries: list[list], chosen_only: bool) -> dict:
    """JSON plan entries [out, in, bias, tokens, kernel or None, config or None, wins] -> sparsify_linears_ plan."""
    plan = {}
    for out_f, in_f, bias, tokens, kernel, config, wins in entries:
        sparse = kernel is not None and (wins or not chosen_only)
        cfg = KernelConfig(**config) if config else None
        plan[(out_f, in_f, bias, tokens)] = LayerChoice(tokens, None, None, cfg, sparse, "from the layer table",
                                                        kernel or "cusparselt")
    return plan


@torch.inference_mode()
def e2e_case(case: dict[str, Any]) -> dict[str, Any]:
    """Worker: the ViT-B/16-sized encoder in one variant at one batch, from a CUDA graph."""
    variant, batch = case["variant"], case["batch"]
    model, images = _vit(VitShape(**case["shape"]), batch)
    ref = model(images)  # (B, classes) dense fp16
    sparse_layers = 0
    if variant.startswith("sparse"):
        sparsify_linears_(model, images, _plan(case["plan"], chosen_only="chosen" in variant))
        sparse_layers = sum(isinstance(m, (SemiSparseLinear, TorchSparseLinear)) for m in model.modules())
    fn = torch.compile(model) if variant.endswith("compiled") else model
    err = check_close(fn(images), ref, variant, tol=E2E_TOL)
    timing = time_cuda(lambda: fn(images), batch, warmup=5, iters=case["iters"], cuda_graph=True)
    return {"ms": timing.p50_ms, "p95_ms": timing.p95_ms, "p99_ms": timing.p99_ms, "items_per_s": timing.items_per_s,
            "rel_err": err, "sparse_layers": sparse_layers, **_energy(fn, images, batch)}


def _energy(model: Any, images: torch.Tensor, batch: int) -> dict[str, Any]:
    """Joules per image over ~2 s of graph replays, from NVML or jtop where present."""
    source, why = gpu_power_source()
    if source is None:
        return {"energy_j_per_item": None, "power_source": why}
    try:
        return {"energy_j_per_item": energy_per_item(graph_replay(partial(model, images)), batch, source), "power_source": why}
    finally:
        source.close()


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    return layer_case(case) if case["kind"] == "layer" else e2e_case(case)


def layer_cases(shape: VitShape, batches: list[int], iters: int) -> list[dict]:
    return [{"kind": "layer", "group": variant, "variant": variant, "name": f"{name} {fin}->{fout}",
             "in": fin, "out": fout, "batch": b, "tokens": b * shape.tokens, "iters": iters}
            for variant in LAYER_VARIANTS for b in batches for name, fin, fout in vit_layers(shape)]


def layer_shapes_at(shape: VitShape, batches: list[int]) -> dict[Shape, tuple[str, int]]:
    """{(out, in, bias, tokens): (layer name, batch)} of the encoder block's Linears."""
    return {(fout, fin, True, b * shape.tokens): (f"{name} {fin}->{fout}", b)
            for b in batches for name, fin, fout in vit_layers(shape)}


def plan_entries(plan: dict[Shape, LayerChoice]) -> list[list]:
    """Per (shape, tokens): the tuned config and whether it beats dense (both from CUDA graphs).
    The encoder's Linears also see 196 (patch embedding) and B (head) rows: those stay dense."""
    return [[*key, c.kernel if c.sparse_ms is not None else None, asdict(c.config) if c.config else None, c.sparse]
            for key, c in plan.items()]


def tuned_rows(plan: dict[Shape, LayerChoice], names: dict[Shape, tuple[str, int]]) -> list[dict]:
    rows = []
    for key, choice in plan.items():
        name, batch = names[key]
        row: dict[str, Any] = {"variant": "tuned_graph", "name": name, "batch": batch, "tokens": key[3],
                               "reason": choice.reason}
        if choice.sparse_ms is not None:
            row.update(ms=choice.sparse_ms, kernel=choice.kernel, config=asdict(choice.config) if choice.config else None)
        else:
            row["error"] = choice.reason
        rows.append(row)
    return rows


def e2e_cases(shape: VitShape, batches: list[int], iters: int, entries: list[list], compiled: bool) -> list[dict]:
    common = {"kind": "e2e", "iters": iters, "plan": entries, "shape": vars(shape)}
    cases = [{**common, "group": v, "variant": v, "batch": b}
             for v in E2E_VARIANTS if not v.endswith("compiled") for b in batches]
    if compiled:
        cases += [{**common, "group": v, "variant": v, "batch": b}
                  for b in batches if b >= COMPILED_MIN_BATCH for v in E2E_VARIANTS if v.endswith("compiled")]
    return cases


def _cell(row: dict, base: dict | None) -> str:
    if "ms" not in row:
        return "FAILED" if not row.get("error", "").startswith("skipped") else "skipped"
    speed = f" {base['ms'] / row['ms']:.2f}x" if base and "ms" in base else ""
    return f"{row['ms']:.4f}{speed}"


def format_tables(result: dict) -> str:
    lines = ["per layer: ms per call (p50) and speed-up vs dense_graph; fp16, tokens = batch x tokens per image"]
    lines.append(f"{'layer':<16}{'batch':>6}" + "".join(f"{v:>18}" for v in TABLE_VARIANTS))
    table: dict[tuple, dict[str, dict]] = {}
    for row in result["layers"]:
        table.setdefault((row["name"], row["batch"]), {})[row["variant"]] = row
    for (name, batch), variants in table.items():
        base = variants.get("dense_graph")
        lines.append(f"{name:<16}{batch:>6}" + "".join(f"{_cell(variants.get(v, {}), base):>18}" for v in TABLE_VARIANTS))
    lines += ["", "end to end (ViT-B/16-sized encoder, CUDA graphs): ms per batch and speed-up vs dense"]
    lines.append(f"{'variant':<24}" + "".join(f"{'batch ' + str(b):>20}" for b in result["config"]["batches"]))
    e2e: dict[str, dict[int, dict]] = {}
    for row in result["end_to_end"]:
        e2e.setdefault(row["variant"], {})[row["batch"]] = row
    for variant, by_batch in e2e.items():
        base_name = "dense_compiled" if variant.endswith("compiled") else "dense"
        cells = [_cell(by_batch[b], e2e.get(base_name, {}).get(b)) if b in by_batch else "-"
                 for b in result["config"]["batches"]]
        lines.append(f"{variant:<24}" + "".join(f"{c:>20}" for c in cells))
    energy = [r for r in result["end_to_end"] if r.get("energy_j_per_item")]
    if energy:
        lines += ["", f"energy per image ({energy[0]['power_source']}), mJ"]
        lines += [f"{r['variant']:<24} batch {r['batch']:>4}: {r['energy_j_per_item'] * 1e3:.3f}" for r in energy]
    failures = [r for r in result["layers"] + result["end_to_end"] if "error" in r]
    lines += ["", f"failures ({len(failures)}):"] + [
        f"  {r.get('name', 'e2e')} b{r['batch']} {r['variant']}: {r['error'][:160]}" for r in failures]
    return "\n".join(lines)


def _labelled(cases: list[dict], rows: list[dict]) -> list[dict]:
    keep = ("variant", "name", "batch", "tokens")
    return [{**{k: c[k] for k in keep if k in c}, **r} for c, r in zip(cases, rows)]


def run_probe(
    out_dir: Path, batches: list[int], budget_s: float, iters: int, compiled: bool, shape: VitShape = VIT_B16,
    sweep_algs: int = MAX_SWEEP_ALG,
) -> dict:
    """Layers first (half the budget at most), then end to end with the plan they give."""
    start = time.monotonic()
    ok, why = probe()
    result: dict[str, Any] = {"device": why, "torch": torch.__version__, "cuda": torch.version.cuda,
                              "config": {"batches": batches, "iters": iters, "budget_s": budget_s, "shape": vars(shape)}}
    if not ok:
        raise SystemExit(f"cannot run the 2:4 GPU probe: {why}")
    cases = layer_cases(shape, batches, iters)
    result["layers"] = _labelled(cases, run_isolated(WORKER, cases, budget_s * 0.25))
    names = layer_shapes_at(shape, batches)
    plan = plan_layers(list(names), iters=iters, timeout_s=budget_s * 0.75 - (time.monotonic() - start),
                       sweep_algs=sweep_algs)
    result["layers"] += tuned_rows(plan, names)
    entries = plan_entries(plan)
    result["plan"] = entries
    cases = e2e_cases(shape, batches, max(10, iters // 2), entries, compiled)
    remaining = budget_s - (time.monotonic() - start)
    result["end_to_end"] = _labelled(cases, run_isolated(WORKER, cases, remaining))
    result["seconds"] = time.monotonic() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sparse_gpu_probe.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edged.bench.sparse_gpu_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for sparse_gpu_probe.json")
    parser.add_argument("--batches", type=int_list(example="1,8,32,128"), default=[1, 8, 32, 128],
                        help="comma-separated batch sizes (default 1,8,32,128)")
    parser.add_argument("--budget-s", type=number(0.0, open_minimum=True), default=420.0,
                        help="wall-clock budget for all cases")
    parser.add_argument("--iters", type=count(), default=50, help="timed iterations per measurement")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile end-to-end variants")
    args = parser.parse_args(argv)
    result = run_probe(args.out, args.batches, args.budget_s, args.iters, not args.no_compile)
    print(f"device: {result['device']}  torch {result['torch']}  CUDA {result['cuda']}  ({result['seconds']:.0f} s)\n")
    print(format_tables(result))
    print(f"\nJSON: {args.out / 'sparse_gpu_probe.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(run_case, cuda_healthy) if "--cases" in sys.argv else main())

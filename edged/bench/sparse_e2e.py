"""`edged bench sparse --device cuda`: end to end, one CUDA graph per model, fp16, rows per batch:

  dense          cuBLAS everywhere (the baseline)
  torch 2:4      every 2:4 Linear as torch's semi-structured tensor (cuSPARSELt, transposed output fused)
  edged choice   the fastest verified kernel per layer group, chosen in place (`compile.in_place`)
  int8 dense     every 2:4 Linear as torch._int_mm, scales from the calibration ranges
  int8 2:4       every 2:4 Linear as cuSPARSELt int8 2:4, each shape's fastest verified alg id
                 (`compile.int8_tuning`), kept only where the whole model beats alg 0 everywhere

on ViT-B/16 (197 tokens per image) and an LLM-sized MLP stack (4096 -> 14336 -> 4096, 64 tokens per
sequence). Each row's output is checked against dense fp16 (INT8 within INT8_TOL). p50/p99 from graph
replays, energy per item where a power source exists (NVML on a datacenter GPU).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from edged.bench.vit import VIT_B16, VitEncoder, prune_by_magnitude_
from edged.compile.base import replace_module
from edged.compile.in_place import E2E_TOL, Trial, choose_in_place_, replayed_graph
from edged.compile.int8_gemm import calibrated_amax, quantize_linears_
from edged.compile.int8_tuning import plan_int8, tuned_in_place_
from edged.compile.semi_structured import DTYPE, Shape, TorchSparseLinear, linear_shapes, max_rel_error
from edged.compile.sparse_tuning import LayerChoice, plan_layers
from edged.errors import Unsupported
from edged.measure.energy import energy_per_item
from edged.measure.timing import time_cuda

INT8_TOL = 0.15  # per-tensor activation scales over 12 blocks: a few % of the output's scale, not more
ROWS = ("dense", "torch 2:4", "edged choice", "int8 dense", "int8 2:4")
MLP_DIM, MLP_HIDDEN, MLP_TOKENS, MLP_DEPTH = 4096, 14336, 64, 2


class MlpStack(nn.Module):
    """x + fc2(gelu(fc1(x))) `depth` times, (B, T, dim): an LLM's MLP share of the work."""

    def __init__(self, dim: int = MLP_DIM, hidden: int = MLP_HIDDEN, depth: int = MLP_DEPTH) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                                    for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


FAMILIES = ("vit", "mlp")


def family(key: str) -> tuple[str, nn.Module, Any]:
    """"vit" or "mlp" -> (its name, the 2:4-pruned fp16 CUDA model, batch -> example input)."""
    if key == "vit":
        vit = VitEncoder(VIT_B16)
        prune_by_magnitude_(vit)
        return ("ViT-B/16", vit.to("cuda", DTYPE).eval(),
                lambda b: torch.randn(b, 3, VIT_B16.image, VIT_B16.image, device="cuda", dtype=DTYPE))
    mlp = MlpStack()
    prune_by_magnitude_(mlp)
    with torch.no_grad():  # timm-like init scale, so activations stay O(1) through the stack
        for layer in mlp.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(0.5)
    return (f"MLP {MLP_DIM}->{MLP_HIDDEN}->{MLP_DIM} x{MLP_DEPTH}", mlp.to("cuda", DTYPE).eval(),
            lambda b: torch.randn(b, MLP_TOKENS, MLP_DIM, device="cuda", dtype=DTYPE))


def _swap_all_(model: nn.Module, names: list[str]) -> None:
    for name in names:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)  # linear_shapes keeps Linear layers only
        replace_module(model, name, TorchSparseLinear(layer.weight, layer.bias))


def variant(row: str, model: nn.Module, x: Tensor, batch: int, plans: tuple[dict, dict],
            amax: dict[str, float]) -> tuple[nn.Module, dict]:
    """A copy of `model` as `row` names it, and what was chosen (edged choice, int8 2:4). `plans` are the fp16 and
    the INT8 2:4 per-shape tunings; `amax` is keyed by the model's 2:4 Linears (the family's shape pass found
    them), so they are not looked up again here."""
    plan, int8_plan = plans
    model = copy.deepcopy(model)
    info: dict[str, Any] = {}
    if row == "torch 2:4":
        _swap_all_(model, list(amax))
    elif row == "edged choice":
        started = time.monotonic()

        def progress(t: Trial) -> None:
            print(f"    trial {trial_line(asdict(t))}  [{time.monotonic() - started:.0f} s]", flush=True)

        choice = choose_in_place_(model, x, batch, plan=plan, on_trial=progress)
        info = {"kernels": choice.kernels, "trials": [asdict(t) for t in choice.trials], "given_up": choice.given_up}
    elif row.startswith("int8"):
        quantize_linears_(model, amax, sparse=row == "int8 2:4")
        if row == "int8 2:4":
            info = tuned_in_place_(model, x, batch, int8_plan, partial(_graph_ms, x=x, batch=batch))
    return model, info


def _graph_ms(model: nn.Module, x: Tensor, batch: int, iters: int = 30) -> float:
    """`model(x)`'s p50 ms replayed from one CUDA graph."""
    replay, _ = replayed_graph(partial(model, x))
    return time_cuda(replay, batch, warmup=5, iters=iters).p50_ms


@torch.inference_mode()
def bench_family(name: str, model: nn.Module, example: Any, batches: list[int], iters: int, source: Any,
                 tune_s: float, sweep_algs: int = 6) -> list[dict]:
    """Every row at every batch for one model family."""
    shapes = {b: linear_shapes(model, example(b))[0] for b in batches}
    every_shape = sorted({s for by_name in shapes.values() for s in by_name.values()})
    plans = (plan_layers(every_shape, iters=10, timeout_s=tune_s, sweep_algs=sweep_algs),
             plan_int8(every_shape, sweep_algs, timeout_s=tune_s))
    amax = calibrated_amax(model, list(shapes[batches[0]]), [example(8) for _ in range(2)])
    rows = []
    for batch in batches:
        x = example(batch)
        reference = model(x)
        for row in ROWS:
            started = time.monotonic()
            try:
                m, info = variant(row, model, x, batch, plans, amax)
                if row == "edged choice":
                    info["plan"] = shape_plan(plans[0], set(shapes[batch].values()))
                fn, out = replayed_graph(partial(m, x))
                err = max_rel_error(out, reference)
                timing = time_cuda(fn, batch, iters=iters).as_dict()
                energy = energy_per_item(fn, batch, source, seconds=1.0)
                ok = err <= (INT8_TOL if row.startswith("int8") else E2E_TOL)
                rows.append({"family": name, "batch": batch, "row": row, **timing, "rel_err": err, "verified": ok,
                             "j_per_item": energy, "setup_s": time.monotonic() - started, **info})
                del m
            except (RuntimeError, ValueError, Unsupported) as exc:
                rows.append({"family": name, "batch": batch, "row": row, "error": str(exc)[:300]})
            print(format_e2e(rows).splitlines()[-1], flush=True)  # each row as it lands: a long run shows progress
            torch.cuda.empty_cache()
    return rows


def shape_plan(plan: dict[Shape, LayerChoice], shapes: set[Shape]) -> dict[str, dict]:
    """The tuning's verdict for each Linear shape at one batch, as JSON: each layout's fastest verified kernel
    (alg id, split-K), its and dense's ms, and why it was kept sparse or dense. The in-place trials then pick
    among these per layer group ("kernels")."""
    return {f"{o}<-{i}{' +bias' if b else ''} @ {t} tokens": asdict(plan[(o, i, b, t)])
            for o, i, b, t in sorted(shapes) if (o, i, b, t) in plan}


def format_e2e(rows: list[dict]) -> str:
    dense: dict[tuple, float]
    head = (f"{'family':<28} {'batch':>5} {'row':<13} {'p50 ms':>8} {'p99 ms':>8} {'vs dense':>8} {'mJ/item':>8} "
            f"{'err':>7} {'setup s':>7}")
    lines, dense = [head, "-" * len(head)], {}  # (family, batch) -> dense p50 ms
    for r in rows:
        key = (r["family"], r["batch"])
        if "error" in r:
            lines.append(f"{r['family'][:28]:<28} {r['batch']:>5} {r['row']:<13} error: {r['error'][:60]}")
            continue
        if r["row"] == "dense":
            dense[key] = r["p50_ms"]
        speed = f"{dense[key] / r['p50_ms']:.2f}x" if key in dense else "-"
        mj = f"{r['j_per_item'] * 1e3:.2f}" if r.get("j_per_item") else "-"
        flag = "" if r["verified"] else " FAIL"
        lines.append(f"{r['family'][:28]:<28} {r['batch']:>5} {r['row']:<13} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                     f"{speed:>8} {mj:>8} {r['rel_err']:>7.3f} {r['setup_s']:>7.1f}{flag}")
    return "\n".join(lines)


def trial_line(trial: dict) -> str:
    """One in-place trial: its group, the kernel it put there and on any group switched with it ("edged chained +
    <group> edged"), and the whole model's ms beside the kernels in place before it (or why it failed)."""
    kernels = " + ".join([trial["kernel"], *(f"{g} {k}" for g, k in trial.get("partner", {}).items())])
    failed = f"failed: {trial['error'][:80]}"
    ms = f"{trial['ms']:.3f} ms vs {trial.get('base_ms', 0.0):.3f} before" if trial["ms"] is not None else failed
    return f"{trial['group']:<36} {kernels:<13} {ms}"


def format_choices(rows: list[dict]) -> str:
    """Per layer group: the kernel edged kept at each batch, and the whole model's ms of every trial."""
    lines = []
    for r in rows:
        if "int8_in_place" in r:
            t = r["int8_in_place"]
            algs = ", ".join(f"{k}: alg {v['alg_id']}" for k, v in r["int8_kernels"].items() if v)
            lines.append(f"{r['family']} batch {r['batch']} int8 2:4: tuned {t['tuned_ms']:.3f} ms vs alg 0 "
                         f"{t['alg0_ms']:.3f} ms, {'kept' if t['kept'] else 'alg 0 kept'} ({algs})")
        if r["row"] != "edged choice" or "trials" not in r:
            continue
        lines.append(f"{r['family']} batch {r['batch']}:")
        lines += [f"  {trial_line(t)}{'  kept' if t['kept'] else ''}" for t in r["trials"]]
        if r.get("given_up"):
            lines.append(f"  given up for dense: {r['given_up']}")
    return "\n".join(lines)


def run_e2e(batches: list[int], iters: int, source: Any, tune_s: float = 40.0,
            families: tuple[str, ...] = FAMILIES, sweep_algs: int = 6) -> list[dict]:
    rows: list[dict] = []
    for key in families:
        name, model, example = family(key)
        rows += bench_family(name, model, example, batches, iters, source, tune_s, sweep_algs)
        del model
        torch.cuda.empty_cache()
    return rows


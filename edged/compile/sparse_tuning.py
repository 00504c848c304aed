"""Per-shape 2:4 kernel tuning for the `cusparselt` backend: every candidate timed in worker processes.

Why tune: the default kernel is often not the fastest (H100, 768->3072 at 6304 tokens: alg 0 0.083 ms, the best of
36 working alg ids 0.052 ms, dense 0.048 ms). So each Linear shape is tuned at its real token count: cuSPARSELt's
search and a sweep of every alg id in each input and output layout, and torch's CUTLASS 2:4 kernels, each checked
against dense and timed from a CUDA graph; the fastest verified one wins, and a layer stays dense where sparse is
not faster.

Not swept: split-K. cuSPARSELt 0.8 on the H100 refuses an explicit split (`CUSPARSELT_MATMUL_SPLIT_K` 2, 3 or 4:
status 3, invalid value) for every alg id and layout tried (4096 <- 14336 at 512 tokens, alg ids 5 and 22, all four
layouts), so the search's own pick is the only split a plan gets.

Layouts: cuSPARSELt computes D (out, T) = W X^T. X^T is read column-major (the input x (T, in) row-major) or
row-major (an input that arrives feature-major from a chained layer); D is written column-major (y (T, out)
row-major) or row-major ("feature-major", ~2x faster on sm_90, then copied or chained). Each of the four layouts
is its own kernel choice, so each is swept.

Why workers: some kernels die with "illegal instruction" and leave the CUDA context broken, so all tuning runs
in worker processes (`isolation.run_isolated`); a configuration that broke a worker is not tried again, and this
process only ever runs configurations a worker verified. On torch's CUTLASS path: torch builds it for compute
capability 8.x only (refused on the H100, where that refusal is recorded as the candidate's error).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from edged.compile.base import replace_module
from edged.compile.cusparselt_lib import KernelConfig
from edged.compile.inputs import ModelInputs
from edged.compile.isolation import run_isolated, worker_main
from edged.compile.semi_structured import (
    DTYPE, SemiSparseLinear, Shape, TorchSparseLinear, check_close, linear_shapes, padded,
)
from edged.measure.timing import time_cuda
from edged.sparse.nm import nm_keep_mask

MIN_SPEEDUP = 1.02  # keep sparse only when it beats dense by more than timing noise
PLAN_TIMEOUT_S = 600.0  # all shapes of one model, worker start-ups included
GRAPH_REPEAT = 10  # calls per timed graph replay (see edged/measure/clocks.py)
MAX_SWEEP_ALG = 64  # alg ids timed per shape (the H100 with cuSPARSELt 0.8 has 50)
WORKER = "edged.compile.sparse_tuning"
LAYOUTS = ((False, False), (False, True), (True, False), (True, True))  # (input feature-major, output feature-major)


def cuda_healthy() -> bool:
    """Whether plain kernels and cuSPARSELt still run correctly in this process."""
    try:
        torch.cuda.synchronize()
        w = torch.zeros(16, 16, device="cuda", dtype=DTYPE)
        w[:, ::2] = 1  # 2 of every 4 kept
        x = torch.ones(8, 16, device="cuda", dtype=DTYPE)
        y = SemiSparseLinear(w, None)(x)
        torch.cuda.synchronize()
        return bool((y == 8).all()) and float((x @ w.t()).sum()) == 8 * 16 * 8
    except Exception:  # any failure here means the context is unusable
        return False


# ---- tuning one Linear shape (runs in a worker) ----

def random_2_4_linear(out_f: int, in_f: int, bias: bool) -> nn.Linear:
    """fp16 CUDA Linear with random weights pruned to 2:4 (kernel speed does not depend on values)."""
    layer = nn.Linear(in_f, out_f, bias=bias).to("cuda", DTYPE).eval()
    with torch.no_grad():
        layer.weight.mul_(nm_keep_mask(layer.weight.abs()).to(DTYPE))  # (out, in)
    return layer


@torch.inference_mode()
def tune_case(case: dict[str, Any]) -> dict[str, Any]:
    """Worker: one measurement of Linear (case out, in, bias) at case tokens rows, from a CUDA graph.
    op "dense": cuBLAS, plus how many alg ids cuSPARSELt has for the shape; op "search": the
    library's own pick; op "alg": one alg id in one layout; op "cutlass": torch's CUTLASS kernels. Sparse
    outputs are checked against dense first."""
    torch.manual_seed(0)
    layer = random_2_4_linear(case["out"], case["in"], case["bias"])
    x = torch.randn(case["tokens"], case["in"], device="cuda", dtype=DTYPE)  # (T, in)
    iters = case.get("iters", 20)

    def graph_ms(fn: Any) -> float:
        return time_cuda(fn, x.shape[0], iters=iters, cuda_graph=True, repeat=GRAPH_REPEAT).p50_ms

    ref = layer(x)  # (T, out)
    if case["op"] == "dense":
        max_alg_id = SemiSparseLinear(layer.weight, layer.bias).plan(padded(x.shape[0])).max_alg_id
        return {"ms": graph_ms(lambda: layer(x)), "max_alg_id": max_alg_id}
    if case["op"] == "cutlass":
        cutlass = TorchSparseLinear(layer.weight, layer.bias, cutlass=True)
        err = check_close(cutlass(x), ref, "CUTLASS 2:4")
        return {"kernel": "cutlass", "config": None, "ms": graph_ms(lambda: cutlass(x)), "rel_err": err}
    config = KernelConfig(case.get("alg_id", 0), feature_major=case.get("feature_major", False),
                          input_feature_major=case.get("input_feature_major", False))
    if config.input_feature_major:  # x as a chained layer hands it over: (T, in) with strides (1, T)
        x = x.t().contiguous().t()
        sparse = SemiSparseLinear(layer.weight, layer.bias, fm_input_config=config)
    else:
        sparse = SemiSparseLinear(layer.weight, layer.bias, config)
    if case["op"] == "search":
        config = sparse.search(x)
    err = check_close(sparse(x), ref, f"cuSPARSELt {config}")
    return {"kernel": "cusparselt", "config": asdict(config), "ms": graph_ms(lambda: sparse(x)), "rel_err": err}


# ---- per-layer decisions for a model ----

def _config(raw: dict[str, Any] | None) -> KernelConfig | None:
    return KernelConfig(**raw) if raw else None


@dataclass
class LayerChoice:
    tokens: int
    dense_ms: float | None
    sparse_ms: float | None
    config: KernelConfig | None  # cuSPARSELt's kernel for a row-major input; None for CUTLASS
    sparse: bool
    reason: str
    kernel: str = "cusparselt"  # edged's binding; or "cutlass", "torch" (torch's semi-structured tensor)
    fm_input_config: KernelConfig | None = None  # the fastest verified kernel for an input that arrives feature-major
    fm_output_config: KernelConfig | None = None  # the fastest verified kernel writing D (out, T): a chain's start
    chain_out: bool = False  # the output is left feature-major for the next layer

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LayerChoice:
        """The inverse of `dataclasses.asdict` (a stored cusparselt plan's per-layer choice)."""
        configs = {k: _config(raw.get(k)) for k in ("config", "fm_input_config", "fm_output_config")}
        return cls(**{**raw, **configs})

    def chained(self) -> LayerChoice | None:
        """This layer writing feature-major and leaving it so (its next layer reads it as is); None if no such
        kernel was verified."""
        if self.fm_output_config is None:
            return None
        return replace(self, config=self.fm_output_config, sparse=True, kernel="cusparselt", chain_out=True)

    def module(self, layer: nn.Linear) -> nn.Module:
        """The sparse replacement of `layer` this choice names."""
        if self.kernel in ("cutlass", "torch"):
            return TorchSparseLinear(layer.weight, layer.bias, cutlass=self.kernel == "cutlass")
        return SemiSparseLinear(layer.weight, layer.bias, self.config, self.fm_input_config, self.chain_out)

    def describe(self) -> str:
        names = {"cutlass": "CUTLASS", "torch": "torch semi-structured (cuSPARSELt)"}
        return names.get(self.kernel, f"cuSPARSELt {self.config}{', chained' if self.chain_out else ''}")


def _fastest(rows: list[dict[str, Any]], **layout: bool) -> dict[str, Any] | None:
    """The fastest verified row whose config has `layout` (CUTLASS rows: row-major in and out)."""
    ok = [row for row in rows if "ms" in row
          and all((row.get("config") or {}).get(key, False) == value for key, value in layout.items())]
    return min(ok, key=lambda row: row["ms"], default=None)


def choose(tokens: int, dense: dict[str, Any], tried: list[dict[str, Any]]) -> LayerChoice:
    """Sparse with the fastest verified config for a row-major input if it beats dense by MIN_SPEEDUP, else dense
    (why); with the fastest kernels for a feature-major input and for a feature-major output beside it."""
    if "error" in dense:
        return LayerChoice(tokens, None, None, None, False, f"dense timing failed: {dense['error']}")
    best = _fastest(tried, input_feature_major=False)
    if best is None:
        errors = "; ".join(sorted({row.get("error", "?") for row in tried}))[:500]
        return LayerChoice(tokens, dense["ms"], None, None, False, f"no 2:4 kernel ran correctly: {errors}")
    fm_in, fm_out = _fastest(tried, input_feature_major=True), _fastest(tried, input_feature_major=False, feature_major=True)
    choice = LayerChoice(tokens, dense["ms"], best["ms"], _config(best.get("config")), dense["ms"] / best["ms"] >= MIN_SPEEDUP,
                         "", best.get("kernel", "cusparselt"), _config(fm_in and fm_in["config"]),
                         _config(fm_out and fm_out["config"]))
    verified = sum("ms" in row for row in tried)
    choice.reason = (f"sparse {best['ms']:.4f} ms ({choice.describe()}, best of {verified} verified configs) vs dense "
                     f"{dense['ms']:.4f} ms at {tokens} tokens")
    return choice


# (alg id, output feature-major, input feature-major) configurations that broke a tuning worker in this process
# (the GPU, driver and library do not change while it runs): later tunings skip them instead of paying a worker
# restart each
broken_configs: set[tuple[int, bool, bool]] = set()


def _layout_group(name: str, feature_major: bool, input_feature_major: bool = False) -> str:
    """A worker group per layout: a layout whose kernels break a worker leaves the others untouched."""
    return name + (" from feature-major" if input_feature_major else "") + (" feature-major" if feature_major else "")


def tuning_cases(shapes: list[Shape], max_alg_ids: dict[Shape, int], iters: int,
                 sweep_algs: int = MAX_SWEEP_ALG) -> list[dict[str, Any]]:
    """Every alg id (the first `sweep_algs`) for every shape in all four layouts, alg-major: a configuration that
    breaks a worker once (its group) is skipped for the remaining shapes instead of breaking one worker per shape."""
    top = min(max(max_alg_ids.values(), default=0), sweep_algs)
    return [{"op": "alg", "alg_id": alg, "feature_major": fm_out, "input_feature_major": fm_in, "out": o, "in": i,
             "bias": b, "tokens": t, "iters": iters, "group": _layout_group(f"alg {alg}", fm_out, fm_in)}
            for alg in range(top) for fm_in, fm_out in LAYOUTS if (alg, fm_out, fm_in) not in broken_configs
            for (o, i, b, t) in shapes if alg < max_alg_ids.get((o, i, b, t), 0)]


def plan_layers(shapes: list[Shape], iters: int = 20, timeout_s: float = PLAN_TIMEOUT_S,
                sweep_algs: int = MAX_SWEEP_ALG) -> dict[Shape, LayerChoice]:
    """Tune every shape in worker processes; {shape: choice}. Never breaks this process's CUDA.
    First dense and cuSPARSELt's search per shape, then the alg-id sweep, all within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    base = [{"out": o, "in": i, "bias": b, "tokens": t, "iters": iters} for o, i, b, t in shapes]
    first = [{**c, "op": "dense", "group": f"dense {n}"} for n, c in enumerate(base)]
    first += [{**c, "op": "search", "feature_major": layout, "group": _layout_group("search", layout)}
              for layout in (False, True) for c in base]
    first += [{**c, "op": "cutlass", "group": "cutlass"} for c in base]
    rows = run_isolated(WORKER, first, deadline - time.monotonic(), max_breaks=1)
    n = len(shapes)
    dense, searched, cutlass = rows[:n], rows[n:3 * n], rows[3 * n:]
    max_alg_ids = {shape: row.get("max_alg_id", 0) for shape, row in zip(shapes, dense)}
    sweep = tuning_cases(shapes, max_alg_ids, iters, sweep_algs)
    swept = run_isolated(WORKER, sweep, deadline - time.monotonic(), max_breaks=1) if sweep else []
    tried: dict[Shape, list[dict]] = {shape: [s, f, c] for shape, s, f, c in zip(shapes, searched, searched[n:], cutlass)}
    for case, row in zip(sweep, swept):
        tried[(case["out"], case["in"], case["bias"], case["tokens"])].append(row)
        if row.get("worker_broken") and "time budget" not in row.get("error", ""):
            broken_configs.add((case["alg_id"], case["feature_major"], case["input_feature_major"]))
    return {shape: choose(shape[3], d, tried[shape]) for shape, d in zip(shapes, dense)}


@torch.inference_mode()
def sparsify_linears_(
    model: nn.Module, inputs: ModelInputs, plan: dict[Shape, LayerChoice] | None = None
) -> tuple[dict[str, LayerChoice], dict[str, str]]:
    """Swap, in place, each 2:4 Linear of the fp16 CUDA `model` whose shape at the token count of
    `inputs` is faster sparse (per `plan`, tuned in workers when not given) for a SemiSparseLinear,
    after checking it against the dense layer. Returns (choices by weight name, dense reasons)."""
    shapes, dense = linear_shapes(model, inputs)
    plan = plan if plan is not None else plan_layers(sorted(set(shapes.values())))
    choices: dict[str, LayerChoice] = {}
    for name, shape in shapes.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)  # linear_shapes keeps Linear layers only
        choice = choices[f"{name}.weight"] = plan.get(shape) or LayerChoice(shape[3], None, None, None, False, "not planned")
        if not choice.sparse:
            dense[f"{name}.weight"] = f"kept dense: {choice.reason}"
            continue
        sparse = choice.module(layer)
        x = torch.randn(shape[3], shape[1], device=layer.weight.device, dtype=DTYPE)  # (T, in)
        check_close(sparse(x), layer(x), f"{name} with {choice.describe()}")
        replace_module(model, name, sparse)
    return choices, dense


if __name__ == "__main__":  # a tuning worker (see isolation.run_isolated)
    sys.exit(worker_main(tune_case, cuda_healthy))

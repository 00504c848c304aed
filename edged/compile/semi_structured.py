"""2:4 Linear kernels for the `cusparselt` backend (`cusparselt_backend`): cuSPARSELt and torch's, tuned per shape.

Why the straightforward `to_sparse_semi_structured` use is slow, and what this module does instead:
- Plan set-up on every call: PyTorch's `_cslt_sparse_mm` (behind every F.linear on a
  SparseSemiStructuredTensor) builds cuSPARSELt's descriptors and matmul plan on each call and
  throws them away (H100: 0.66-1.24 ms per ViT layer call). -> edged's own binding (`cusparselt_lib`)
  compresses each weight once and keeps one plan per token count, so a forward is one
  cusparseLtMatmul launch; the model runs from CUDA graphs (`GraphedRunner`).
- Algorithm choice: the default kernel is often not the fastest (H100, 768->3072 at 6304 tokens:
  alg 0 0.083 ms, the best of 36 working alg ids 0.052 ms, dense 0.048 ms). -> each layer shape is
  tuned at its real token count: cuSPARSELt's search and a sweep of every alg id, each checked
  against dense and timed from a CUDA graph; the fastest verified one wins, and a layer stays dense
  where sparse is not faster.
- Transposes: cuSPARSELt wants the sparse operand first, so y = x W^T is computed as (W x^T)^T
  with column-major views (no copies). Tokens are padded to a multiple of 8 only when needed.
- Robustness: some kernels die with "illegal instruction" and leave the CUDA context broken, so all
  tuning runs in worker processes (`isolation.run_isolated`); an alg id that broke a worker is not
  tried again, and this process only ever runs configurations a worker verified.
- Two kernel families: cuSPARSELt (every alg id) and torch's CUTLASS 2:4 kernels, which torch builds for
  compute capability 8.x only (Ampere, Jetson Orin's sm_87; refused on the H100, where that refusal is
  recorded as the candidate's error). Both are timed the same way; the fastest verified one wins.
Conv2d layers stay dense here (both are matmul only).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.compile.base import replace_module, two_four_layers
from edged.compile.cusparselt_lib import CompressedWeight, CusparseLtError, KernelConfig, SparseMatmulPlan, context
from edged.compile.inputs import ModelInputs, call_model
from edged.compile.isolation import run_isolated, worker_main
from edged.compile.row_major import row_major
from edged.errors import Unsupported
from edged.measure.timing import time_cuda
from edged.sparse.nm import nm_keep_mask

DTYPE = torch.float16
TOKEN_ALIGN = 8  # cuSPARSELt fp16: the dense operand's dimensions must be multiples of 8
WEIGHT_ALIGN = 16  # cuSPARSELt fp16: the sparse weight's dimensions must be multiples of 16
MIN_SPEEDUP = 1.02  # keep sparse only when it beats dense by more than timing noise
PLAN_TIMEOUT_S = 600.0  # all shapes of one model, worker start-ups included
GRAPH_REPEAT = 10  # calls per timed graph replay (see edged/measure/clocks.py)
MAX_SWEEP_ALG = 64  # alg ids timed per shape (the H100 with cuSPARSELt 0.8 has 50)
WORKER = "edged.compile.semi_structured"


def probe() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        return False, f"GPU compute capability {major}.{minor} < 8.0 (2:4 sparse tensor cores need Ampere or newer)"
    try:
        version = context(torch.device("cuda")).version_text
    except (CusparseLtError, OSError) as exc:
        return False, f"cuSPARSELt unusable: {exc}"
    return True, f"cuSPARSELt {version} on {torch.cuda.get_device_name()} (sm_{major}{minor})"


def padded(tokens: int) -> int:
    return tokens + (-tokens) % TOKEN_ALIGN


class SemiSparseLinear(nn.Module):
    """y = x W^T + b with W (out, in) compressed once for cuSPARSELt, one plan per token count."""

    bias: Tensor | None  # (out,)

    def __init__(self, weight: Tensor, bias: Tensor | None, config: KernelConfig | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.compressed = CompressedWeight(weight.detach().to(DTYPE))
        self.register_buffer("bias", None if bias is None else bias.detach().to(DTYPE).contiguous())
        self.config = config or KernelConfig()
        self.plans: dict[int, SparseMatmulPlan] = {}  # padded token count -> plan

    def plan(self, tokens: int) -> SparseMatmulPlan:
        if tokens not in self.plans:  # built on the first (warm-up) call of a shape, never in a graph capture
            self.plans[tokens] = SparseMatmulPlan(self.compressed, tokens, self.bias, self.config)
        return self.plans[tokens]

    def _rows(self, x: Tensor) -> Tensor:
        x2d = x.reshape(-1, self.in_features)  # (T, in) row-major
        return F.pad(x2d, (0, 0, 0, padded(x2d.shape[0]) - x2d.shape[0])).contiguous()  # (T', in)

    def search(self, x: Tensor) -> KernelConfig:
        """Let cuSPARSELt pick the kernel for this token count; it becomes this layer's config."""
        x2d = self._rows(x)
        self.config = self.plan(x2d.shape[0]).search(x2d)
        return self.config

    @torch.compiler.disable  # a ctypes call: under torch.compile it runs eagerly between compiled graphs
    def forward(self, x: Tensor) -> Tensor:  # (..., in)
        lead = x.shape[:-1]
        x2d = self._rows(x)
        y = self.plan(x2d.shape[0])(x2d)  # (T', out)
        return y[: lead.numel()].reshape(*lead, self.out_features)


def torch_semi_structured_weight(weight: Tensor, cutlass: bool) -> nn.Parameter:
    """W (out, in) as torch's SparseSemiStructuredTensor: its CUTLASS kernels, or its default backend.

    The transpose is not fused into cuSPARSELt's output: on the H100 that fused call ran at 0.44-0.69x dense,
    while the plain call, which returns (W x^T)^T as a (T, out) view with strides (1, T), ran at 1.19-1.82x dense
    on three of four ViT/LLM shapes. `TorchSparseLinear` makes that view row-major with one tiled copy (a strided
    q/k/v sends SDPA to its fp32 math kernels). torch builds after 2.11 may fuse the transpose themselves."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass
    try:
        tensor = to_sparse_semi_structured(weight.detach().to(DTYPE).contiguous())
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = False
    tensor.fuse_transpose_cusparselt = False
    return nn.Parameter(tensor, requires_grad=False)


class TorchSparseLinear(nn.Module):
    """y = x W^T + b through torch's semi-structured tensor: cuSPARSELt, or CUTLASS (compute capability 8.x)."""

    bias: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None, cutlass: bool = False) -> None:
        super().__init__()
        self.weight = torch_semi_structured_weight(weight, cutlass=cutlass)
        self.register_buffer("bias", None if bias is None else bias.detach().to(DTYPE).contiguous())

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out) row-major, as dense returns it
        return row_major(F.linear(x, self.weight, self.bias))  # a no-op unless the kernel wrote a transposed view


def max_rel_error(out: Tensor, ref: Tensor) -> float:
    """max |out - ref| / (max |ref| + eps), in float32."""
    return float((out.float() - ref.float()).abs().max()) / (float(ref.float().abs().max()) + 1e-6)


def check_close(out: Tensor, ref: Tensor, what: str, tol: float = 2e-2) -> float:
    """Raise Unsupported unless `out` matches the dense fp16 `ref` (a different summation order only)."""
    err = max_rel_error(out, ref)
    if not err <= tol:  # also catches NaN
        raise Unsupported(f"{what}: output differs from dense fp16 by {err:.3g} of its scale (accepted: <= {tol})")
    return err


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
    library's own pick; op "alg": one alg id; op "cutlass": torch's CUTLASS kernels. Sparse outputs are
    checked against dense first."""
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
    config = KernelConfig(case.get("alg_id", 0), feature_major=case.get("feature_major", False))
    sparse = SemiSparseLinear(layer.weight, layer.bias, config)
    if case["op"] == "search":
        sparse.search(x)
    err = check_close(sparse(x), ref, f"cuSPARSELt {sparse.config}")
    return {"kernel": "cusparselt", "config": asdict(sparse.config), "ms": graph_ms(lambda: sparse(x)), "rel_err": err}


# ---- per-layer decisions for a model ----

Shape = tuple[int, int, bool, int]  # (out_features, in_features, has bias, tokens)


@dataclass
class LayerChoice:
    tokens: int
    dense_ms: float | None
    sparse_ms: float | None
    config: KernelConfig | None  # cuSPARSELt's kernel; None for CUTLASS
    sparse: bool
    reason: str
    kernel: str = "cusparselt"  # edged's binding; or "cutlass", "torch" (torch's semi-structured tensor)

    def module(self, layer: nn.Linear) -> nn.Module:
        """The sparse replacement of `layer` this choice names."""
        if self.kernel in ("cutlass", "torch"):
            return TorchSparseLinear(layer.weight, layer.bias, cutlass=self.kernel == "cutlass")
        return SemiSparseLinear(layer.weight, layer.bias, self.config)

    def describe(self) -> str:
        names = {"cutlass": "CUTLASS", "torch": "torch semi-structured (cuSPARSELt)"}
        return names.get(self.kernel, f"cuSPARSELt {self.config}")


def choose(tokens: int, dense: dict[str, Any], tried: list[dict[str, Any]]) -> LayerChoice:
    """Sparse with the fastest verified config if it beats dense by MIN_SPEEDUP, else dense (why)."""
    if "error" in dense:
        return LayerChoice(tokens, None, None, None, False, f"dense timing failed: {dense['error']}")
    ok = [row for row in tried if "ms" in row]
    if not ok:
        errors = "; ".join(sorted({row.get("error", "?") for row in tried}))[:500]
        return LayerChoice(tokens, dense["ms"], None, None, False, f"no 2:4 kernel ran correctly: {errors}")
    best = min(ok, key=lambda row: row["ms"])
    kernel = best.get("kernel", "cusparselt")
    config = KernelConfig(**best["config"]) if best.get("config") else None
    faster = dense["ms"] / best["ms"] >= MIN_SPEEDUP
    choice = LayerChoice(tokens, dense["ms"], best["ms"], config, faster, "", kernel)
    choice.reason = (f"sparse {best['ms']:.4f} ms ({choice.describe()}, best of {len(ok)} verified configs) vs dense "
                     f"{dense['ms']:.4f} ms at {tokens} tokens")
    return choice


# (alg id, feature-major) configurations that broke a tuning worker in this process (the GPU, driver and library do
# not change while it runs): later tunings skip them instead of paying a worker restart each
broken_configs: set[tuple[int, bool]] = set()


def _layout_group(name: str, feature_major: bool) -> str:
    """A worker group per output layout: a layout whose kernels break a worker leaves the other's untouched."""
    return f"{name} feature-major" if feature_major else name


def tuning_cases(shapes: list[Shape], max_alg_ids: dict[Shape, int], iters: int,
                 sweep_algs: int = MAX_SWEEP_ALG) -> list[dict[str, Any]]:
    """Every alg id (the first `sweep_algs`) for every shape in both output layouts, alg-major: a configuration that
    breaks a worker once (its group) is skipped for the remaining shapes instead of breaking one worker per shape."""
    top = min(max(max_alg_ids.values(), default=0), sweep_algs)
    return [{"op": "alg", "alg_id": alg, "feature_major": layout, "out": o, "in": i, "bias": b, "tokens": t,
             "iters": iters, "group": _layout_group(f"alg {alg}", layout)}
            for alg in range(top) for layout in (False, True) if (alg, layout) not in broken_configs
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
            broken_configs.add((case["alg_id"], case["feature_major"]))
    return {shape: choose(shape[3], d, tried[shape]) for shape, d in zip(shapes, dense)}


def linear_tokens(model: nn.Module, inputs: ModelInputs, names: list[str]) -> dict[str, int]:
    """Rows of the matmul each named Linear sees for `inputs` (batch x sequence), by a forward pass."""
    modules = dict(model.named_modules())
    tokens: dict[str, int] = {}

    def hook(name: str):
        return lambda _mod, args: tokens.__setitem__(name, args[0].numel() // args[0].shape[-1])

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.inference_mode():
            call_model(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return tokens


def _linear_reason(layer: nn.Module) -> str | None:
    if not isinstance(layer, nn.Linear):
        return "cusparselt accelerates Linear layers only (torch semi-structured sparsity is matmul only)"
    out_f, in_f = layer.weight.shape
    if out_f % WEIGHT_ALIGN or in_f % WEIGHT_ALIGN:
        return f"shape ({out_f}, {in_f}) is not a multiple of {WEIGHT_ALIGN} (cuSPARSELt fp16)"
    return None


def linear_shapes(model: nn.Module, inputs: ModelInputs) -> tuple[dict[str, Shape], dict[str, str]]:
    """({module name: shape} of the 2:4 Linears cuSPARSELt accepts, {weight name: why dense})."""
    candidates, dense = two_four_layers(model)
    for name in list(candidates):
        if reason := _linear_reason(candidates[name]):
            dense[name] = reason
            del candidates[name]
    names = [n.removesuffix(".weight") for n in candidates]
    tokens = linear_tokens(model, inputs, names)
    shapes = {}
    for name, layer in zip(names, candidates.values()):
        out_f, in_f = layer.get_parameter("weight").shape
        shapes[name] = (out_f, in_f, layer.bias is not None, tokens[name])  # type: ignore[union-attr]
    return shapes, dense


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

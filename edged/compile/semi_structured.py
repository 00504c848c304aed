"""`cusparselt` backend: 2:4 Linear layers on sparse tensor cores through PyTorch + cuSPARSELt.

Why the straightforward `to_sparse_semi_structured` use is slow, and what this module does instead:
- Per-call host overhead: every F.linear on a SparseSemiStructuredTensor goes through Python
  `__torch_dispatch__` and a Python custom op, and (torch < 2.12) `_cslt_sparse_mm` builds its
  cuSPARSELt descriptors and plan on every call (~50-200 us of CPU, more than a 768x768 kernel).
  -> `SemiSparseLinear` calls `torch._cslt_sparse_mm` on a pre-compressed weight and the model runs
  from CUDA graphs (`GraphedRunner`), so replays do no host work at all.
- Algorithm choice: the subclass uses alg_id 0 and no split-K. -> each layer shape is tuned at its
  real token count: cuSPARSELt's own search (alg id, split-K, split-K mode) and a sweep of alg ids,
  each checked against dense and timed from a CUDA graph; the fastest verified one wins.
- Transposes: cuSPARSELt wants the sparse operand first, so y = x W^T is computed as (W x^T)^T:
  x^T is a free column-major view and `transpose_result=True` writes y row-major (no copies).
  Tokens are padded to a multiple of 8 only when needed (ViT-B/16 batch 1: 197 -> 200).
- Robustness: a cuSPARSELt failure can leave the CUDA context broken (errors are sticky, and the
  deprecated search call has been seen to break the next compress). So all tuning runs in a worker
  process (`run_isolated`): a case that breaks the worker is recorded as failed, a fresh worker
  continues with the next, and this process only ever runs configurations a worker verified.
- Measure, don't assume: a layer keeps its dense weight where sparse is not faster (recorded).
Conv2d layers stay dense here (torch semi-structured sparsity is matmul only).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.compile.base import CompiledModel, CompileReport, two_four_layers
from edged.compile.cuda_graph import GraphedRunner
from edged.compile.timing import time_cuda
from edged.errors import Unsupported
from edged.export.inputs import ModelInputs, call_model, to_device

DTYPE = torch.float16
TOKEN_ALIGN = 8  # cuSPARSELt fp16: the dense operand's dimensions must be multiples of 8
WEIGHT_ALIGN = 16  # cuSPARSELt fp16: the sparse weight's dimensions must be multiples of 16
MIN_SPEEDUP = 1.02  # keep sparse only when it beats dense by more than timing noise
PLAN_TIMEOUT_S = 600.0  # all shapes of one model, worker start-ups included
GRAPH_REPEAT = 10  # calls per timed graph replay (see timing.py)
MAX_SWEEP_ALG = 8  # alg ids tried beyond cuSPARSELt's own pick
CASE_MARK = "@@case "  # worker stdout lines carrying one case's JSON result


def probe() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        return False, f"GPU compute capability {major}.{minor} < 8.0 (2:4 sparse tensor cores need Ampere or newer)"
    if not torch.backends.cusparselt.is_available():
        return False, "this PyTorch build has no cuSPARSELt"
    return True, f"cuSPARSELt {torch.backends.cusparselt.version()} on {torch.cuda.get_device_name()} (sm_{major}{minor})"


@dataclass(frozen=True)
class CsltConfig:
    """cuSPARSELt kernel choice; the defaults are what `to_sparse_semi_structured` uses."""

    alg_id: int = 0
    split_k: int = 1
    split_k_mode: int = -1


def sparse_mm(packed: Tensor, x2d: Tensor, bias: Tensor | None, config: CsltConfig) -> Tensor:
    """x2d (T, in), T a multiple of 8 -> (T, out) = x2d W^T + bias, W compressed in `packed`."""
    # sparse (out, in) @ dense (in, T): x2d.t() is a column-major view; the result is written (T, out)
    if config.split_k == 1:  # torch < 2.6 (JetPack 6.0/6.1 wheels) has no split-K arguments
        return torch._cslt_sparse_mm(packed, x2d.t(), bias=bias, transpose_result=True, alg_id=config.alg_id)
    return torch._cslt_sparse_mm(packed, x2d.t(), bias=bias, transpose_result=True, alg_id=config.alg_id,
                                 split_k=config.split_k, split_k_mode=config.split_k_mode)


def search_config(packed: Tensor, x2d: Tensor, bias: Tensor | None) -> tuple[CsltConfig, int]:
    """cuSPARSELt's own search at this shape: (best config, highest alg id). Risky: call it in a worker."""
    search = getattr(getattr(torch._C, "_cusparselt", None), "mm_search", None)
    if search is None:  # torch < 2.6: only the alg id
        return CsltConfig(int(torch._cslt_sparse_mm_search(packed, x2d.t(), bias=bias, transpose_result=True))), 0
    alg_id, split_k, split_k_mode, max_alg_id = search(packed, x2d.t(), bias, None, None, True)
    return CsltConfig(int(alg_id), int(split_k), int(split_k_mode)), int(max_alg_id)


class SemiSparseLinear(nn.Module):
    """y = x W^T + b with W (out, in) compressed once for cuSPARSELt and a fixed kernel config."""

    packed: Tensor  # cuSPARSELt's compressed layout: kept values + metadata
    bias: Tensor | None  # (out,)

    def __init__(self, weight: Tensor, bias: Tensor | None, config: CsltConfig = CsltConfig()) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("packed", torch._cslt_compress(weight.detach().contiguous()))
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())
        self.config = config

    def forward(self, x: Tensor) -> Tensor:  # (..., in)
        lead = x.shape[:-1]
        x2d = x.reshape(-1, self.in_features)  # (T, in) row-major
        tokens = x2d.shape[0]
        pad = (-tokens) % TOKEN_ALIGN
        if pad:
            x2d = F.pad(x2d, (0, 0, 0, pad))  # (T', in)
        y = sparse_mm(self.packed, x2d, self.bias, self.config)  # (T', out)
        return y[:tokens].reshape(*lead, self.out_features)


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
        y = sparse_mm(torch._cslt_compress(w), x, None, CsltConfig())
        torch.cuda.synchronize()
        return bool((y == 8).all()) and float((x @ w.t()).sum()) == 8 * 16 * 8
    except Exception:  # any failure here means the context is unusable
        return False


# ---- worker processes: risky calls run where a failure cannot break the caller ----

def error_text(exc: BaseException) -> str:
    """`Type: first line of the message` (CUDA errors carry pages of hints after it)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def serve_cases(handler: Callable[[dict], dict], cases: list[dict], start: int) -> int:
    """Worker side: run cases[start:], printing one CASE_MARK line per case. A case that fails and
    leaves CUDA broken ends the worker (exit 3) so the parent continues in a fresh one."""
    for index in range(start, len(cases)):
        try:
            result = handler(cases[index])
        except Exception as exc:  # recorded in the case's row; the health check decides what follows
            result = {"error": error_text(exc)}
        healthy = "error" not in result or cuda_healthy()
        print(CASE_MARK + json.dumps({"index": index, **result, "worker_broken": not healthy}), flush=True)
        if not healthy:
            return 3
    return 0


def _read_cases(stdout: str | bytes | None) -> dict[int, dict]:
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else (stdout or "")
    rows = [json.loads(line[len(CASE_MARK):]) for line in text.splitlines() if line.startswith(CASE_MARK)]
    return {row.pop("index"): row for row in rows}


def run_isolated(module: str, cases: list[dict], timeout_s: float, args: tuple[str, ...] = ()) -> list[dict]:
    """Parent side: run `python -m module --cases FILE --start K *args` until every case has a row.
    A worker that dies or hangs marks its current case failed; a group (case["group"]) that broke
    two workers has its remaining cases skipped. Cases left when `timeout_s` runs out are skipped."""
    results: dict[int, dict] = {}
    broken: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the edged package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(cases))
        start = 0
        while (start := _next_unskipped(cases, results, broken, start)) < len(cases):
            if time.monotonic() >= deadline:
                break
            cmd = [sys.executable, "-m", module, "--cases", str(path), "--start", str(start), *args]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=deadline - time.monotonic())
                stdout, why = done.stdout, f"worker exited with {done.returncode}: {done.stderr.strip()[-300:]}"
            except subprocess.TimeoutExpired as exc:
                stdout, why = exc.stdout or "", "time budget ran out in this case"  # type: ignore[assignment]
            new = _read_cases(stdout)
            current = next((i for i in range(start, len(cases)) if i not in results and i not in new), None)
            if current is not None and not any(row["worker_broken"] for row in new.values()):
                new[current] = {"error": why, "worker_broken": True}  # the worker died inside this case
            results.update(new)
            for i, row in new.items():
                if row["worker_broken"]:
                    group = str(cases[i].get("group"))
                    broken[group] = broken.get(group, 0) + 1
    return [results.get(i, {"error": "skipped: time budget ran out"}) for i in range(len(cases))]


def _next_unskipped(cases: list[dict], results: dict[int, dict], broken: dict[str, int], start: int) -> int:
    for i in range(start, len(cases)):
        if i in results:
            continue
        if broken.get(str(cases[i].get("group")), 0) >= 2:
            results[i] = {"error": f"skipped: {cases[i].get('group')} broke the CUDA context twice", "worker_broken": False}
            continue
        return i
    return len(cases)


def worker_main(handler: Callable[[dict], dict], argv: list[str] | None = None) -> int:
    """Entry point of a worker module: `--cases FILE --start K`."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=Path, required=True)
    parser.add_argument("--start", type=int, default=0)
    args, _ = parser.parse_known_args(argv)
    return serve_cases(handler, json.loads(args.cases.read_text()), args.start)


# ---- tuning one Linear shape (runs in a worker) ----

def random_2_4_linear(out_f: int, in_f: int, bias: bool) -> nn.Linear:
    """fp16 CUDA Linear with random weights pruned to 2:4 (kernel speed does not depend on values)."""
    from edged.sparse.nm import nm_keep_mask

    layer = nn.Linear(in_f, out_f, bias=bias).to("cuda", DTYPE).eval()
    with torch.no_grad():
        layer.weight.mul_(nm_keep_mask(layer.weight.abs()).to(DTYPE))  # (out, in)
    return layer


def candidate_configs(layer: nn.Linear, x: Tensor) -> tuple[list[CsltConfig], str | None]:
    """The default, cuSPARSELt's search pick and an alg-id sweep; (configs, why the search failed)."""
    tokens = x.shape[0]
    x_pad = F.pad(x, (0, 0, 0, (-tokens) % TOKEN_ALIGN))  # (T', in)
    try:
        searched, max_alg = search_config(torch._cslt_compress(layer.weight.detach()), x_pad, layer.bias)
    except Exception as exc:  # the search itself failed: keep the default if CUDA survived
        if not cuda_healthy():
            raise
        return [CsltConfig()], error_text(exc)
    configs = [CsltConfig(), searched] + [CsltConfig(a) for a in range(1, min(max_alg, MAX_SWEEP_ALG) + 1)]
    return list(dict.fromkeys(configs)), None


def try_config(layer: nn.Linear, x: Tensor, ref: Tensor, config: CsltConfig, iters: int) -> dict[str, Any]:
    """Check one config against dense and time it from a CUDA graph; failures become the row's error."""
    try:
        sparse = SemiSparseLinear(layer.weight, layer.bias, config)
        err = check_close(sparse(x), ref, f"cuSPARSELt {config}")
        ms = time_cuda(lambda: sparse(x), x.shape[0], iters=iters, cuda_graph=True, repeat=GRAPH_REPEAT).p50_ms
        return {"config": asdict(config), "ms": ms, "rel_err": err}
    except Exception as exc:
        if not cuda_healthy():
            raise
        return {"config": asdict(config), "error": error_text(exc)}


@torch.inference_mode()
def tune_case(case: dict[str, Any]) -> dict[str, Any]:
    """Worker: dense vs each cuSPARSELt config for Linear (case out, in, bias) at case tokens rows."""
    torch.manual_seed(0)
    layer = random_2_4_linear(case["out"], case["in"], case["bias"])
    x = torch.randn(case["tokens"], case["in"], device="cuda", dtype=DTYPE)  # (T, in)
    iters = case.get("iters", 50)
    ref = layer(x)  # (T, out)
    dense_ms = time_cuda(lambda: layer(x), x.shape[0], iters=iters, cuda_graph=True, repeat=GRAPH_REPEAT).p50_ms
    configs, search_error = candidate_configs(layer, x)
    tried = [try_config(layer, x, ref, config, iters) for config in configs]
    ok = [t for t in tried if "ms" in t]
    best = min(ok, key=lambda t: t["ms"]) if ok else None
    return {"dense_ms": dense_ms, "tried": tried, "search_error": search_error,
            "best": best["config"] if best else None, "sparse_ms": best["ms"] if best else None}


# ---- per-layer decisions for a model ----

Shape = tuple[int, int, bool, int]  # (out_features, in_features, has bias, tokens)


@dataclass
class LayerChoice:
    tokens: int
    dense_ms: float | None
    sparse_ms: float | None
    config: CsltConfig | None
    sparse: bool
    reason: str


def choice_from_row(tokens: int, row: dict[str, Any]) -> LayerChoice:
    if "error" in row:
        return LayerChoice(tokens, None, None, None, False, f"tuning failed: {row['error']}")
    dense_ms, sparse_ms = row["dense_ms"], row["sparse_ms"]
    if row["best"] is None:
        errors = "; ".join(t.get("error", "") for t in row["tried"])
        return LayerChoice(tokens, dense_ms, None, None, False, f"no cuSPARSELt config ran correctly: {errors}")
    config = CsltConfig(**row["best"])
    faster = dense_ms / sparse_ms >= MIN_SPEEDUP
    why = f"sparse {sparse_ms:.4f} ms ({config}) vs dense {dense_ms:.4f} ms at {tokens} tokens"
    return LayerChoice(tokens, dense_ms, sparse_ms, config, faster, why)


def plan_layers(shapes: list[Shape], iters: int = 50, timeout_s: float = PLAN_TIMEOUT_S) -> dict[Shape, LayerChoice]:
    """Tune every shape in worker processes; {shape: choice}. Never breaks this process's CUDA."""
    cases = [{"out": o, "in": i, "bias": b, "tokens": t, "iters": iters, "group": "tune"} for o, i, b, t in shapes]
    rows = run_isolated("edged.compile.semi_structured", cases, timeout_s)
    return {shape: choice_from_row(shape[3], row) for shape, row in zip(shapes, rows)}


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


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


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
        if not (choice.sparse and choice.config is not None):
            dense[f"{name}.weight"] = f"kept dense: {choice.reason}"
            continue
        sparse = SemiSparseLinear(layer.weight, layer.bias, choice.config)
        x = torch.randn(shape[3], shape[1], device=layer.weight.device, dtype=DTYPE)  # (T, in)
        check_close(sparse(x), layer(x), f"{name} with {choice.config}")
        _set_module(model, name, sparse)
    return choices, dense


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path) -> CompiledModel:
    """fp16 CUDA copy of `model` with fast 2:4 Linears, run through CUDA graphs.

    Decisions are made at the example's batch size: compile with the batch you will serve.
    The artifact is the plan (JSON: per-layer choice, timings, kernel configs, versions) next to
    the torch.export program of the merged weights it applies to."""
    from edged.export.program import export_program

    program = export_program(model, example_inputs, out_dir / "model.pt2")
    gpu_model = copy.deepcopy(model).to("cuda", DTYPE).eval()
    inputs = to_device(example_inputs, "cuda", DTYPE)
    with torch.inference_mode():
        dense_out = call_model(gpu_model, inputs)
    choices, dense = sparsify_linears_(gpu_model, inputs)
    runner = GraphedRunner(lambda x: call_model(gpu_model, x))
    max_err = check_close(runner(inputs), dense_out, "the 2:4 model")

    def predict(batch: ModelInputs) -> Tensor:
        return runner(to_device(batch, "cuda", DTYPE)).float().cpu()

    report = CompileReport(backend="cusparselt", dense=dense)
    report.sparse = {n: f"cuSPARSELt {c.config}: {c.reason}" for n, c in choices.items() if n not in dense}
    report.details = {
        "max_rel_err_vs_dense_fp16": max_err,
        "cuda_graph_fallbacks": runner.fallbacks,
        "device": probe()[1],
        "torch": torch.__version__,
        "choices": {n: asdict(c) for n, c in choices.items()},
    }
    plan = out_dir / "cusparselt_plan.json"
    plan.write_text(json.dumps({**report.as_dict(), "program": program.name}, indent=2, default=str))
    return CompiledModel("cusparselt", plan, predict, report)


if __name__ == "__main__":  # a tuning worker (see run_isolated)
    sys.exit(worker_main(tune_case))

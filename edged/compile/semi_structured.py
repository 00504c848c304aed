"""`cusparselt` backend: 2:4 Linear layers on sparse tensor cores through PyTorch + cuSPARSELt.

Why the straightforward `to_sparse_semi_structured` use is slow, and what this module does instead:
- Per-call host overhead: every F.linear on a SparseSemiStructuredTensor goes through Python
  `__torch_dispatch__`, a Python custom op and cuSPARSELt descriptor/plan set-up inside
  `_cslt_sparse_mm`. That is tens of microseconds of CPU per layer, more than the kernel of a
  768x768 layer. -> `SemiSparseLinear` calls `torch._cslt_sparse_mm` directly on a pre-compressed
  weight, and the whole model runs through CUDA graphs (`GraphedRunner`), which skip host work.
- Algorithm choice: the subclass uses alg_id 0. -> we ask cuSPARSELt to search
  (`_cslt_sparse_mm_search`) at the layer's real shape (tokens = batch x sequence) and time it.
- Transposes: cuSPARSELt needs the sparse operand first, so y = x W^T is computed as
  (W x^T)^T. x^T is a free column-major view and `transpose_result=True` writes y row-major,
  so no transpose copy is made. Tokens are padded to a multiple of 8 only when needed.
- Batching tokens: all tokens of all images form one matmul (N = batch x 197 for ViT-B/16).
- Kernel family: `SparseSemiStructuredTensor._FORCE_CUTLASS` selects torch's CUTLASS kernels,
  built for sm80; on Hopper the dense cuBLAS path has newer kernels. We use cuSPARSELt only.
- Measure, don't assume: each layer is timed sparse vs dense at its real shape, both replayed
  from CUDA graphs, and keeps the dense weight where sparse is not faster (recorded).
Conv2d layers stay dense here (torch semi-structured sparsity is matmul only).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.compile.base import CompiledModel, CompileReport, two_four_layers
from edged.compile.cuda_graph import GraphedRunner
from edged.compile.timing import time_cuda
from edged.errors import Unsupported
from edged.export.inputs import ModelInputs, call_model, to_device
from edged.export.program import export_program

DTYPE = torch.float16
TOKEN_ALIGN = 8  # cuSPARSELt fp16: the dense operand's dimensions must be multiples of 8
WEIGHT_ALIGN = 16  # cuSPARSELt fp16: the sparse weight's dimensions must be multiples of 16
MIN_SPEEDUP = 1.02  # keep sparse only when it beats dense by more than timing noise


def probe() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        return False, f"GPU compute capability {major}.{minor} < 8.0 (2:4 sparse tensor cores need Ampere or newer)"
    if not torch.backends.cusparselt.is_available():
        return False, "this PyTorch build has no cuSPARSELt"
    return True, f"cuSPARSELt {torch.backends.cusparselt.version()} on {torch.cuda.get_device_name()} (sm_{major}{minor})"


class SemiSparseLinear(nn.Module):
    """y = x W^T + b with W (out, in) compressed once for cuSPARSELt and a fixed algorithm id."""

    packed: Tensor  # (out * in / 2 values + metadata), cuSPARSELt's compressed layout
    bias: Tensor | None  # (out,)

    def __init__(self, weight: Tensor, bias: Tensor | None, alg_id: int = 0) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("packed", torch._cslt_compress(weight.detach().contiguous()))
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())
        self.alg_id = alg_id

    def forward(self, x: Tensor) -> Tensor:  # (..., in)
        lead = x.shape[:-1]
        x2d = x.reshape(-1, self.in_features)  # (T, in) row-major
        tokens = x2d.shape[0]
        pad = (-tokens) % TOKEN_ALIGN
        if pad:
            x2d = F.pad(x2d, (0, 0, 0, pad))  # (T', in)
        # sparse (out, in) @ dense (in, T') with x2d.t() a column-major view; result (T', out)
        y = torch._cslt_sparse_mm(self.packed, x2d.t(), bias=self.bias, transpose_result=True, alg_id=self.alg_id)
        return y[:tokens].reshape(*lead, self.out_features)


@dataclass
class LayerChoice:
    tokens: int
    dense_ms: float
    sparse_ms: float | None
    alg_id: int | None
    sparse: bool
    reason: str


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


def _search_alg(packed: Tensor, x: Tensor, bias: Tensor | None) -> int:
    try:
        return int(torch._cslt_sparse_mm_search(packed, x.t(), bias=bias, transpose_result=True))
    except RuntimeError:  # search unsupported for this shape/version: the library default
        return 0


@torch.inference_mode()
def choose(layer: nn.Linear, tokens: int) -> LayerChoice:
    """Time dense vs 2:4 sparse for `layer` (fp16, CUDA) at `tokens` rows, both as CUDA graphs."""
    x = torch.randn(tokens, layer.in_features, device=layer.weight.device, dtype=DTYPE)
    dense_ms = time_cuda(lambda: layer(x), tokens, cuda_graph=True).p50_ms
    candidate = SemiSparseLinear(layer.weight, layer.bias)
    pad = (-tokens) % TOKEN_ALIGN
    candidate.alg_id = _search_alg(candidate.packed, F.pad(x, (0, 0, 0, pad)), candidate.bias)
    try:
        sparse_ms = time_cuda(lambda: candidate(x), tokens, cuda_graph=True).p50_ms
    except RuntimeError as exc:
        return LayerChoice(tokens, dense_ms, None, None, False, f"cuSPARSELt failed: {exc}")
    faster = dense_ms / sparse_ms >= MIN_SPEEDUP
    why = f"sparse {sparse_ms:.4f} ms vs dense {dense_ms:.4f} ms at {tokens} tokens"
    return LayerChoice(tokens, dense_ms, sparse_ms, candidate.alg_id, faster, why)


def _linear_reason(layer: nn.Module) -> str | None:
    if not isinstance(layer, nn.Linear):
        return "cusparselt accelerates Linear layers only (torch semi-structured sparsity is matmul only)"
    out_f, in_f = layer.weight.shape
    if out_f % WEIGHT_ALIGN or in_f % WEIGHT_ALIGN:
        return f"shape ({out_f}, {in_f}) is not a multiple of {WEIGHT_ALIGN} (cuSPARSELt fp16)"
    return None


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def sparsify_linears_(model: nn.Module, inputs: ModelInputs, force_sparse: bool = False) -> tuple[dict[str, LayerChoice], dict[str, str]]:
    """Swap, in place, every 2:4 Linear of the fp16 CUDA `model` that is faster sparse at the token
    count `inputs` produces for a SemiSparseLinear. Returns (choices by weight name, dense reasons).
    `force_sparse` skips the timing decision (used by the benchmark to show sparse everywhere)."""
    candidates, dense = two_four_layers(model)
    for name in list(candidates):
        reason = _linear_reason(candidates[name])
        if reason:
            dense[name] = reason
            del candidates[name]
    module_names = [n.removesuffix(".weight") for n in candidates]
    tokens = linear_tokens(model, inputs, module_names)
    choices: dict[str, LayerChoice] = {}
    cache: dict[tuple, LayerChoice] = {}  # ViT blocks repeat the same shapes
    for weight_name, module_name in zip(candidates, module_names):
        layer = candidates[weight_name]
        assert isinstance(layer, nn.Linear)  # _linear_reason kept only Linear layers
        key = (tuple(layer.weight.shape), layer.bias is not None, tokens[module_name])
        if key not in cache:
            cache[key] = choose(layer, tokens[module_name])
        choice = choices[weight_name] = cache[key]
        if choice.sparse or (force_sparse and choice.alg_id is not None):
            _set_module(model, module_name, SemiSparseLinear(layer.weight, layer.bias, choice.alg_id or 0))
        else:
            dense[weight_name] = f"kept dense: {choice.reason}"
    return choices, dense


def _check_close(sparse_out: Tensor, dense_out: Tensor) -> float:
    diff = float((sparse_out.float() - dense_out.float()).abs().max())
    scale = float(dense_out.float().abs().max()) + 1e-6
    if diff > 2e-2 * scale + 1e-2:  # fp16 with a different summation order, nothing more
        raise Unsupported(f"cuSPARSELt output differs from dense fp16 by {diff:.3g} (scale {scale:.3g})")
    return diff


def compile(model: nn.Module, example_inputs: ModelInputs, out_dir: Path) -> CompiledModel:
    """fp16 CUDA copy of `model` with fast 2:4 Linears, run through CUDA graphs.

    Decisions are made at the example's batch size: compile with the batch you will serve.
    The artifact is the plan (JSON: per-layer choice, timings, alg ids, versions) next to the
    torch.export program of the merged weights it applies to."""
    program = export_program(model, example_inputs, out_dir / "model.pt2")
    gpu_model = copy.deepcopy(model).to("cuda", DTYPE).eval()
    inputs = to_device(example_inputs, "cuda", DTYPE)
    with torch.inference_mode():
        dense_out = call_model(gpu_model, inputs)
    choices, dense = sparsify_linears_(gpu_model, inputs)
    runner = GraphedRunner(lambda x: call_model(gpu_model, x))
    max_diff = _check_close(runner(inputs), dense_out)

    def predict(batch: ModelInputs) -> Tensor:
        return runner(to_device(batch, "cuda", DTYPE)).float().cpu()

    report = CompileReport(backend="cusparselt", dense=dense)
    report.sparse = {n: f"cuSPARSELt alg {c.alg_id}: {c.reason}" for n, c in choices.items() if c.sparse}
    report.details = {
        "max_abs_diff_vs_dense_fp16": max_diff,
        "cuda_graph_fallbacks": runner.fallbacks,
        "device": probe()[1],
        "torch": torch.__version__,
        "choices": {n: asdict(c) for n, c in choices.items()},
    }
    plan = out_dir / "cusparselt_plan.json"
    plan.write_text(json.dumps({**report.as_dict(), "program": program.name}, indent=2))
    return CompiledModel("cusparselt", plan, predict, report)

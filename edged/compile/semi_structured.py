"""2:4 Linear kernels for the `cusparselt` backend (`cusparselt_backend`): cuSPARSELt and torch's, tuned per shape.

Why the straightforward `to_sparse_semi_structured` use is slow, and what this module does instead:
- Plan set-up on every call: PyTorch's `_cslt_sparse_mm` (behind every F.linear on a
  SparseSemiStructuredTensor) builds cuSPARSELt's descriptors and matmul plan on each call and
  throws them away (H100: 0.66-1.24 ms per ViT layer call). -> edged's own binding (`cusparselt_lib`)
  compresses each weight once and keeps one plan per token count, so a forward is one
  cusparseLtMatmul launch; the model runs from CUDA graphs (`GraphedRunner`).
- Algorithm choice and layouts: the default kernel is often not the fastest, so each layer shape is tuned at its
  real token count in worker processes (`sparse_tuning`), which also keeps kernels that crash away from this
  process. Both kernel families are candidates: cuSPARSELt (every alg id, in each input and output layout) and
  torch's CUTLASS 2:4 kernels, which torch builds for compute capability 8.x only (Ampere, Jetson Orin's sm_87).
- Transposes: cuSPARSELt wants the sparse operand first, so y = x W^T is computed as (W x^T)^T with
  column-major views (no copies). Tokens are padded to a multiple of 8 only when needed. On sm_90 the kernels
  are faster writing D as (out, T) row-major ("feature-major"); that D is copied to (T, out) once
  (`row_major`), or, in a chain, handed as it is to the next 2:4 layer, which reads it as its X^T.
Conv2d layers stay dense here (both are matmul only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.compile.base import two_four_layers
from edged.compile.cusparselt_lib import CompressedWeight, CusparseLtError, KernelConfig, SparseMatmulPlan, context
from edged.compile.inputs import ModelInputs, call_model
from edged.compile.row_major import row_major
from edged.errors import Unsupported

DTYPE = torch.float16
TOKEN_ALIGN = 8  # cuSPARSELt fp16: the dense operand's dimensions must be multiples of 8
WEIGHT_ALIGN = 16  # cuSPARSELt fp16: the sparse weight's dimensions must be multiples of 16


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


def reads_feature_major(x2d: Tensor) -> bool:
    """Whether x2d (T, in) is a chained 2:4 layer's D (in, T) row-major, seen with strides (1, T), T a multiple of 8."""
    tokens = x2d.shape[0]
    return tokens > 1 and tokens % TOKEN_ALIGN == 0 and x2d.stride() == (1, tokens)


class SemiSparseLinear(nn.Module):
    """y = x W^T + b with W (out, in) compressed once for cuSPARSELt, one plan per token count and input layout.

    `config` runs a row-major input; `fm_input_config`, when given, runs an input that arrives feature-major (a
    chained layer's output) without copying it. With `chain_out` a feature-major D is returned as it is, strides
    (1, T), for a next layer that reads it so (an elementwise activation keeps that layout)."""

    bias: Tensor | None  # (out,)

    def __init__(self, weight: Tensor, bias: Tensor | None, config: KernelConfig | None = None,
                 fm_input_config: KernelConfig | None = None, chain_out: bool = False) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.compressed = CompressedWeight(weight.detach().to(DTYPE))
        self.register_buffer("bias", None if bias is None else bias.detach().to(DTYPE).contiguous())
        self.config = config or KernelConfig()
        self.fm_input_config, self.chain_out = fm_input_config, chain_out
        self.plans: dict[tuple[int, bool], SparseMatmulPlan] = {}  # (padded token count, feature-major input) -> plan

    def plan(self, tokens: int, feature_major_input: bool = False) -> SparseMatmulPlan:
        key = (tokens, feature_major_input)
        if key not in self.plans:  # built on the first (warm-up) call of a shape, never in a graph capture
            config = self.fm_input_config if feature_major_input else self.config
            self.plans[key] = SparseMatmulPlan(self.compressed, tokens, self.bias, config)
        return self.plans[key]

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
        x2d = x.reshape(-1, self.in_features)  # (T, in): a view of a feature-major input too
        if self.fm_input_config is not None and reads_feature_major(x2d):
            y = self.plan(x2d.shape[0], True)(x2d, chain=self.chain_out)  # (T, out)
        else:
            x2d = self._rows(x)
            y = self.plan(x2d.shape[0])(x2d, chain=self.chain_out)  # (T', out)
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


Shape = tuple[int, int, bool, int]  # (out_features, in_features, has bias, tokens)

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

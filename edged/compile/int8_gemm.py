"""INT8 Linear layers on the GPU: dense (torch._int_mm) and 2:4 (cuSPARSELt int8 via torch._cslt_sparse_mm).

Scales: per tensor for the activation, static, from the calibration pass's input range (amax / 127,
`edged.calibrate.ranges`); per output channel for the weight (its row amax / 127), so
y = (x_q W_q^T) * s_x * s_w + b. Quantizing x is one kernel (`int8_kernels`); the dense path accumulates in
int32 and dequantizes in one more; the 2:4 path lets cuSPARSELt apply s_x * s_w as its per-channel alpha, add b and
write fp16.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edged.calibrate.ranges import AMAX, RangeCollector
from edged.compile.base import replace_module
from edged.compile.int8_kernels import QMAX, dequantize_rows, quantize, quantize_rows

INT_MM_MIN_ROWS = 17  # torch._int_mm needs more than 16 rows (cuBLASLt int8)


def weight_scales(weight: Tensor) -> Tensor:
    """(out,) per-output-channel scales: each row's amax / 127."""
    return (weight.detach().float().abs().amax(dim=1) / QMAX).clamp_min(1e-12)


class Int8Linear(nn.Module):
    """y = dequant(quant(x) W_q^T) + b, dense int8 GEMM; fp16 in and out."""

    bias: Tensor | None
    weight_q: Tensor  # (out, in) int8
    out_scale: Tensor  # (out,) float32: s_x * s_w

    def __init__(self, weight: Tensor, bias: Tensor | None, input_amax: float) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.input_scale = max(input_amax, 1e-12) / QMAX
        w_scale = weight_scales(weight)  # (out,)
        self.register_buffer("weight_q", quantize(weight, w_scale[:, None]))  # (out, in) int8
        self.register_buffer("out_scale", (w_scale * self.input_scale).float())  # (out,)
        self.register_buffer("bias", None if bias is None else bias.detach().half())

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x_q = quantize_rows(x.reshape(-1, self.in_features), self.input_scale, max(lead.numel(), INT_MM_MIN_ROWS))
        acc = torch._int_mm(x_q, self.weight_q.t())  # (T', out) int32
        return dequantize_rows(acc, self.out_scale, self.bias, lead.numel()).reshape(*lead, self.out_features)


class Int8SparseLinear(Int8Linear):
    """The same with W_q 2:4-sparse, compressed once for cuSPARSELt's int8 kernels; `alg_id` picks cuSPARSELt's
    kernel (0, the library's default, until `int8_tuning` finds a faster verified one for the layer's shape)."""

    packed: Tensor  # cuSPARSELt's compressed W_q

    def __init__(self, weight: Tensor, bias: Tensor | None, input_amax: float, alg_id: int = 0) -> None:
        super().__init__(weight, bias, input_amax)
        self.register_buffer("packed", torch._cslt_compress(self.weight_q))
        del self.weight_q
        self.alg_id = alg_id

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        rows = max(lead.numel(), INT_MM_MIN_ROWS)
        x_q = quantize_rows(x.reshape(-1, self.in_features), self.input_scale, rows + (-rows) % 16)  # int8: rows % 16
        # (out, in) 2:4 @ (in, T') -> (T', out) fp16 with transpose_result; alpha = per-output scales. The bias goes
        # into the same call: added after as its own pass it cost more than the GEMM saved on ViT-B fc1 (H100,
        # 768 -> 3072 at 6,304 tokens: 0.100 ms vs 0.035 fused, dense 0.058)
        y = torch._cslt_sparse_mm(self.packed, x_q.t(), bias=self.bias, alpha=self.out_scale,
                                  out_dtype=torch.float16, transpose_result=True, alg_id=self.alg_id)[: lead.numel()]
        return y.reshape(*lead, self.out_features)


def calibrated_amax(model: nn.Module, names: list[str], batches: list[Tensor]) -> dict[str, float]:
    """{module name: max |input|} over calibration `batches`, by the pipeline's own range collector."""
    layers = {n: model.get_submodule(n) for n in names}
    with torch.inference_mode(), RangeCollector(layers) as collector:  # type: ignore[arg-type]
        for batch in batches:
            model(batch)
    return {n: float(r[AMAX]) for n, r in collector.ranges().items()}


def quantize_linears_(model: nn.Module, amax: dict[str, float], sparse: bool) -> int:
    """Swap each named Linear for its INT8 (2:4 when `sparse`) version, in place; returns how many."""
    cls = Int8SparseLinear if sparse else Int8Linear
    for name, top in amax.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        replace_module(model, name, cls(layer.weight, layer.bias, top))
    return len(amax)

"""Explicit-quantization ONNX: edged's float32 export with QuantizeLinear/DequantizeLinear pairs written in, the
graph TensorRT builds INT8 (+ SPARSE_WEIGHTS) engines from and onnxruntime runs on the CPU.

For every Conv / Gemm / MatMul whose weight is one of the calibrated layers' (found by name, or by value as W
or W^T, as the 2:4 check finds it):
- its activation input goes through Q -> DQ with a symmetric per-tensor scale range / 127 (zero point 0), the
  range being the layer's input percentile (or amax) from edged's calibration pass;
- its weight becomes an int8 initializer with per-output-channel symmetric scales max|W_o| / 127 and a DQ
  node (Conv (out, in/g, kh, kw) and Gemm transB (out, in): axis 0; MatMul and Gemm (in, out): axis 1).
  Zeros stay zeros, so a 2:4-pruned weight keeps its pattern (a small kept entry may round to 0 too).
Layers without a range (the classifier head, which calibration does not see) stay float32.
The file's metadata `edged.int8` records which initializer holds each layer's weight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edged.calibrate.ranges import AMAX, PCTL
from edged.compile.base import two_four_layers
from edged.compile.inputs import ModelInputs
from edged.compile.onnx_export import _find_weight, _initializers, _require_onnx, export_onnx
from edged.compile.pattern import PatternCheck
from edged.compile.recipe import CheckedExport
from edged.errors import InvalidInput
from edged.sparse.layers import weight_layers
from edged.sparse.nm import nm_violations

QMAX = 127  # symmetric int8: [-127, 127], as TensorRT requires (zero point 0)
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
METADATA_KEY = "edged.int8"
RANGE_CHOICES = {"percentile": PCTL, "amax": AMAX}


@dataclass
class QdqExport:
    """The QDQ file and what it quantized: layer -> initializer, its activation scale, layers left float."""

    path: Path
    weights: dict[str, str] = field(default_factory=dict)  # layer weight name -> weight initializer in the file
    activation_scales: dict[str, float] = field(default_factory=dict)  # layer weight name -> scale of its input
    float_layers: dict[str, str] = field(default_factory=dict)  # layer weight name -> why it stays float32

    def as_dict(self) -> dict:
        return {"artifact": self.path.name, "int8_layers": len(self.weights), "float_layers": self.float_layers}


def activation_scale(layer_range: Tensor, use: str = "percentile") -> float:
    """Scale of a layer's input from its (amax, percentile) range; a range of 0 (an all-zero input) gets 1."""
    value = float(layer_range[RANGE_CHOICES[use]])
    return value / QMAX if value > 0 else 1.0


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-output-channel symmetric scales, (channels,) float32; an all-zero channel gets 1 (its q is 0 anyway)."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    peak = np.abs(w).max(axis=other) if other else np.abs(w)
    return np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight shaped like w, per-channel scales): q = round(w / s) clipped to [-127, 127]."""
    scales = weight_scales(w, axis)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scales.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return q, scales


def _weight_axis(node) -> int:
    """The output-channel axis of the node's weight initializer (input 1)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1  # MatMul: (in, out)


def _layer_of_initializer(model: nn.Module, ranges: dict[str, Tensor], inits: dict[str, np.ndarray]) -> dict[str, str]:
    """initializer name -> layer weight name, for the layers that have a calibration range."""
    found = {}
    for name, layer in weight_layers(model).items():
        if name in ranges:
            hit = _find_weight(name, layer.weight.detach(), inits)
            if hit is not None:
                found[hit[0]] = name
    return found


def _activation_qdq(tensor: str, prefix: str, scale: float) -> tuple[list, list, str]:
    """(initializers, nodes, output name): `tensor` -> QuantizeLinear -> DequantizeLinear, per-tensor, zero point 0."""
    from onnx import helper, numpy_helper

    names = [tensor, f"{prefix}.scale", f"{prefix}.zero_point"]
    inits = [numpy_helper.from_array(np.array(scale, dtype=np.float32), names[1]),
             numpy_helper.from_array(np.array(0, dtype=np.int8), names[2])]
    nodes = [helper.make_node("QuantizeLinear", names, [f"{prefix}.q"], name=f"{prefix}.quantize"),
             helper.make_node("DequantizeLinear", [f"{prefix}.q", *names[1:]], [f"{prefix}.dq"],
                              name=f"{prefix}.dequantize")]
    return inits, nodes, f"{prefix}.dq"


def _weight_dq(init: str, q: np.ndarray, scales: np.ndarray, axis: int) -> tuple[list, list, str]:
    """(initializers, nodes, output name): the int8 weight `{init}.int8` -> DequantizeLinear along `axis`."""
    from onnx import helper, numpy_helper

    names = [f"{init}.int8", f"{init}.scale", f"{init}.zero_point"]
    inits = [numpy_helper.from_array(q, names[0]), numpy_helper.from_array(scales, names[1]),
             numpy_helper.from_array(np.zeros(scales.shape, dtype=np.int8), names[2])]
    node = helper.make_node("DequantizeLinear", names, [f"{init}.dq"], name=f"{init}.dequantize", axis=axis)
    return inits, [node], f"{init}.dq"


@torch.no_grad()
def export_qdq(model: nn.Module, example_inputs: ModelInputs, ranges: dict[str, Tensor], path: str | Path,
               use: str = "percentile") -> QdqExport:
    """Export `model` to ONNX at `path` with Q/DQ on every calibrated layer's input and int8 weights."""
    _require_onnx()
    import onnx

    if use not in RANGE_CHOICES:
        raise InvalidInput(f"unknown activation range {use!r}", detail={"accepted": list(RANGE_CHOICES)})
    path = Path(path)
    export_onnx(model, example_inputs, path)
    proto = onnx.load(str(path))
    inits = _initializers(path)
    layer_of = _layer_of_initializer(model, ranges, inits)
    result = QdqExport(path)
    new_nodes, new_inits, dropped = [], [], set()
    for node in proto.graph.node:
        layer = layer_of.get(node.input[1]) if node.op_type in WEIGHTED_OPS and len(node.input) > 1 else None
        if layer is not None:
            scale = activation_scale(ranges[layer], use)
            a_inits, a_nodes, node.input[0] = _activation_qdq(node.input[0], f"{layer}.input", scale)
            q, w_scales = quantize_weight(inits[node.input[1]], _weight_axis(node))
            w_inits, w_nodes, dq = _weight_dq(node.input[1], q, w_scales, _weight_axis(node))
            dropped.add(node.input[1])
            result.weights[layer], node.input[1] = node.input[1], dq
            result.activation_scales[layer] = scale
            new_inits += a_inits + w_inits
            new_nodes += a_nodes + w_nodes
        new_nodes.append(node)
    result.float_layers = {name: "no calibration range (not seen by the calibration pass)" if name not in ranges
                           else "its weight is not an initializer of a Conv/Gemm/MatMul in the export"
                           for name in weight_layers(model) if name not in result.weights}
    kept = [init for init in proto.graph.initializer if init.name not in dropped]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept + new_inits)
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(result.weights)})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return result


def dequantized_weights(path: str | Path) -> dict[str, Tensor]:
    """layer weight name -> its int8 weight times its scales, oriented like the PyTorch weight, read from the file."""
    _require_onnx()
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    layers = json.loads({p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY, "{}"))
    consumers = {node.input[1]: node for node in proto.graph.node if len(node.input) > 1}
    out = {}
    for layer, init in layers.items():
        q, scales = inits[f"{init}.int8"], inits[f"{init}.scale"]
        axis = _weight_axis(consumers[f"{init}.dq"])
        shape = [1] * q.ndim
        shape[axis] = -1
        w = torch.from_numpy(q.astype(np.float32) * scales.reshape(shape))
        out[layer] = w.T.contiguous() if axis == 1 and w.ndim == 2 else w  # MatMul / Gemm (in, out) -> (out, in)
    return out


def check_qdq_2_4(path: str | Path, expected: dict[str, Tensor]) -> PatternCheck:
    """Every pruned weight (name -> pruned PyTorch weight) is int8 in the file and, dequantized, holds 2:4
    with zeros wherever the pruned weight has them (rounding may add zeros, never remove one)."""
    weights = dequantized_weights(path)
    check = PatternCheck(artifact=str(path))
    for name, want in expected.items():
        got = weights.get(name)
        if got is None:
            check.problems[name] = "not an int8 weight of the QDQ file"
        elif got.shape != want.shape:
            check.problems[name] = f"shape {tuple(got.shape)} differs from the weight's {tuple(want.shape)}"
        elif nm_violations(got, limit=3):
            check.problems[name] = "not 2:4 after dequantization: " + "; ".join(nm_violations(got, limit=3))
        elif bool(((want == 0) & (got != 0)).any()):
            check.problems[name] = "a pruned (zero) position is non-zero in the int8 weight"
        else:
            check.found[name] = name
    return check


def export_checked_int8(model: nn.Module, example_inputs: ModelInputs, path: Path,
                        ranges: dict[str, Tensor]) -> CheckedExport:
    """`export_qdq` to `path`, raising Unsupported unless every 2:4 weight is int8 there with its pattern; the
    export's int8 summary (layers quantized, layers left float) goes into the check's details."""
    sparse, dense = two_four_layers(model)
    exported = export_qdq(model, example_inputs, ranges, path)
    check = check_qdq_2_4(exported.path, {name: layer.weight.detach() for name, layer in sparse.items()})
    check.raise_if_failed()
    return CheckedExport(exported.path, check, sparse, dense, int8=exported.as_dict())

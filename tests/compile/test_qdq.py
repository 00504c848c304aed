"""The explicit-quantization ONNX, read back with `onnx` itself: int8 weights that hold 2:4 where the model was
pruned, and activation scales that are the calibration pass's ranges / 127."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tiny_model import dense_nonzero_, tiny_classifier
from edged.calibrate import calibrate
from edged.calibrate.ranges import PCTL
from edged.compile import compile_model
from edged.compile.inputs import call_model
from edged.compile.registry import INT8_BACKENDS, available_backends, resolve_backend
from edged.compile.tensorrt_builder import probe as tensorrt_probe
from edged.compile.qdq import check_qdq_2_4, export_qdq
from edged.errors import InvalidInput
from edged.methods.base import backbone_layers
from edged.sparse.nm import check_2_4, prune_2_4_


@pytest.fixture(scope="module")
def calibrated():
    """(tiny classifier with its backbone pruned to 2:4 by |W|, pruned weight names, calibration, images)."""
    model = dense_nonzero_(tiny_classifier())
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.fill_(1.0)
    layers = backbone_layers(model)
    report = prune_2_4_(model, {n: layer.weight.abs() for n, layer in layers.items()}, layers)
    model.eval()
    x = torch.randn(64, 3, 16, 16)
    return model, report.pruned, calibrate(model, x, layers, micro_batch=16), x


def _graph(path):
    graph = onnx.load(str(path)).graph
    return graph, {i.name: numpy_helper.to_array(i) for i in graph.initializer}, {o: n for n in graph.node for o in n.output}


def test_qdq_file_holds_int8_2_4_weights_and_the_calibration_scales(calibrated, tmp_path):
    model, pruned, calibration, x = calibrated
    path = export_qdq(model, x[:4], calibration.ranges, tmp_path / "model.int8.onnx").path
    graph, inits, producer = _graph(path)
    weights = dict(model.named_parameters())
    layers_seen = set()
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.input[1] not in producer:
            continue
        w_dq, a_dq = producer[node.input[1]], producer[node.input[0]]
        assert w_dq.op_type == a_dq.op_type == "DequantizeLinear"
        q, scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
        assert q.dtype == np.int8 and scale.shape == (q.shape[0],)  # per output channel
        name = w_dq.input[0].removesuffix(".int8")
        layers_seen.add(name)
        w = torch.from_numpy(q.astype(np.float32) * scale.reshape(-1, *[1] * (q.ndim - 1)))
        expected = weights[name].detach()
        if name in pruned:
            assert check_2_4(w) and not bool(((expected == 0) & (w != 0)).any())
        if "backbone.0" not in name and "backbone.3" not in name:  # a BatchNorm follows those: folded in the export
            torch.testing.assert_close(w, expected, atol=float(scale.max()) / 2 + 1e-7, rtol=0)
        quantize = producer[a_dq.input[0]]
        assert quantize.op_type == "QuantizeLinear"
        a_scale = float(inits[quantize.input[1]])
        assert a_scale == np.float32(float(calibration.ranges[name][PCTL]) / 127)
        assert not np.any(inits[quantize.input[2]])  # symmetric: zero point 0
    assert layers_seen == set(backbone_layers(model)) and set(pruned) <= layers_seen
    assert "head.weight" in inits  # no calibration range: the head stays float32
    assert check_qdq_2_4(path, {name: weights[name].detach() for name in pruned}).ok


def test_the_2_4_check_finds_a_pruned_position_made_nonzero(calibrated, tmp_path):
    model, pruned, calibration, x = calibrated
    path = export_qdq(model, x[:4], calibration.ranges, tmp_path / "model.int8.onnx").path
    proto = onnx.load(str(path))
    name = pruned[-1]
    expected = dict(model.named_parameters())[name].detach()
    init = next(i for i in proto.graph.initializer if i.name == f"{name}.int8")
    q = numpy_helper.to_array(init).copy()
    q.reshape(-1)[int((expected.flatten() == 0).nonzero()[0])] = 5  # a zero of the 2:4 pattern
    init.CopyFrom(numpy_helper.from_array(q, init.name))
    onnx.save(proto, str(path))
    check = check_qdq_2_4(path, {name: expected})
    assert not check.ok and name in check.problems


def test_onnxruntime_int8_agrees_with_float32(calibrated, tmp_path):
    model, pruned, calibration, x = calibrated
    compiled = compile_model(model, x[:8], "onnxruntime", tmp_path, int8_ranges=calibration.ranges)
    assert compiled.artifact.name == "model.int8.onnx"
    details = compiled.report.details
    assert details["pattern_check"]["ok"] and set(details["pattern_check"]["found"]) == set(pruned)
    assert details["int8"]["int8_layers"] == len(backbone_layers(model))
    assert set(details["int8"]["float_layers"]) == {"head.weight"}
    with torch.no_grad():
        ref, got = call_model(model, x), compiled.predict(x)  # (64, classes)
    assert 0 < float((got - ref).abs().max()) < 0.1 * float(ref.abs().max())  # quantized: close, not equal
    assert float((got.argmax(1) == ref.argmax(1)).float().mean()) >= 0.9


def test_int8_needs_a_backend_that_runs_it(calibrated, tmp_path):
    model, _, calibration, x = calibrated
    with pytest.raises(InvalidInput, match="does not run INT8"):
        compile_model(model, x[:4], "eager", tmp_path, int8_ranges=calibration.ranges)
    usable = [name for name, (ok, _) in available_backends().items() if ok]
    # auto picks the best backend that runs INT8 (onnxruntime here, where TensorRT cannot be installed)
    assert resolve_backend("auto", int8=True) == next(name for name in INT8_BACKENDS if name in usable)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not tensorrt_probe()[0], reason=tensorrt_probe()[1])
def test_tensorrt_builds_an_int8_engine_from_the_qdq_graph(calibrated, tmp_path):
    model, pruned, calibration, x = calibrated
    compiled = compile_model(model, x[:8], "tensorrt", tmp_path, int8_ranges=calibration.ranges)
    assert compiled.artifact.suffix == ".engine" and (tmp_path / "model.int8.onnx").is_file()
    details = compiled.report.details
    assert details["pattern_check"]["ok"] and details["int8"]["int8_layers"] == len(backbone_layers(model))
    with torch.no_grad():
        ref, got = call_model(model, x), compiled.predict(x)  # (64, classes)
    assert float((got.argmax(1) == ref.argmax(1)).float().mean()) >= 0.9

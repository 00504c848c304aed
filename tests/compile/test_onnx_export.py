import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edged.errors import InvalidInput, Unsupported
from edged.compile.onnx_export import OnnxRunner, check_onnx_2_4, export_onnx, onnx_max_abs_diff
from edged.sparse.nm import group_nonzeros


@pytest.mark.parametrize("case", ["cnn", "text"])
def test_every_pruned_initializer_keeps_exact_2_4(case, request, tmp_path):
    model, weights, inputs = request.getfixturevalue(case)
    path = export_onnx(model, inputs, tmp_path / "m.onnx")
    check = check_onnx_2_4(path, weights)
    assert check.ok, check.problems
    assert set(check.found) == set(weights)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    for name, init_name in check.found.items():
        arr = torch.from_numpy(inits[init_name].copy())
        if arr.shape != weights[name].shape:
            arr = arr.T  # MatMul weight stored as (in, out)
        assert (group_nonzeros(arr) == 2).all(), name


def test_text_export_transposes_a_weight_and_check_still_finds_it(text, tmp_path):
    model, weights, inputs = text
    path = export_onnx(model, inputs, tmp_path / "t.onnx")
    check = check_onnx_2_4(path, weights)
    assert check.ok, check.problems
    renamed = {k: v for k, v in check.found.items() if k != v}
    assert renamed, "expected the exporter to rename/transpose the 3-D Linear weight"


@pytest.mark.parametrize("case", ["cnn", "text"])
def test_onnxruntime_matches_pytorch_at_other_batch_sizes(case, request, tmp_path):
    model, _, inputs = request.getfixturevalue(case)
    path = export_onnx(model, inputs, tmp_path / "m.onnx")
    assert onnx_max_abs_diff(model, path, inputs) < 1e-4
    one = {k: v[:1] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:1]
    assert onnx_max_abs_diff(model, path, one) < 1e-4


def test_check_detects_a_broken_pattern(cnn, tmp_path):
    model, weights, inputs = cnn
    path = export_onnx(model, inputs, tmp_path / "m.onnx")
    mo = onnx.load(str(path))
    for init in mo.graph.initializer:
        if init.name == "fc.weight":
            arr = numpy_helper.to_array(init).copy()
            arr[arr == 0] = 0.5  # dense again
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(mo, str(path))
    check = check_onnx_2_4(path, weights)
    assert "fc.weight" in check.problems and "not N:M" in check.problems["fc.weight"]
    with pytest.raises(Unsupported):
        check.raise_if_failed()


def test_runner_names_missing_inputs(text, tmp_path):
    model, _, inputs = text
    path = export_onnx(model, inputs, tmp_path / "t.onnx")
    with pytest.raises(InvalidInput, match="attention_mask"):
        OnnxRunner(path)({"input_ids": inputs["input_ids"]})

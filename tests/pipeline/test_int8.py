"""`quantize: int8` in one adaptation: the calibration pass's ranges, the ranges re-measured on the adapted
model, and the onnxruntime INT8 model's accuracy against float32 on real digits (MobileNetV2: `edged bench int8`)."""

import pytest
import torch

from tiny_model import tiny_classifier
from edged.compile import compile_model
from edged.compile.inputs import call_model
from edged.data.bundled import mnist_5k
from edged.data.preprocess import preprocess_images
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig
from edged.pipeline.state import made
from edged.train.evaluate import accuracy_of, batched_logits


@pytest.fixture(scope="module")
def int8_adapted():
    """tiny_classifier adapted to 2,000 real digits with 2:4 and quantize int8 (399 validation samples: 1 point
    is 4 of them)."""
    task = mnist_5k()
    task = task.subset(torch.randperm(len(task), generator=torch.Generator().manual_seed(1))[:2000])
    config = AdaptConfig(method="taskedge", budget=0.01, epochs=6, batch_size=32, lr=3e-2, head_lr=3e-2, device="cpu",
                         sparsity="2:4", dense_reference=False, quantize="int8")
    return adapt(tiny_classifier(), lambda t: preprocess_images(t.x, image_size=16), task, config)


def test_int8_ranges_come_from_a_pass_over_the_adapted_model(int8_adapted):
    result = int8_adapted
    assert result.calibration is not None and result.int8_ranges is not None
    assert set(result.int8_ranges) == set(result.calibration.ranges) == set(result.calibration.norms)
    assert "int8_ranges" in result.metrics["stage_seconds"]
    # pruning, BatchNorm re-estimation and training moved the inputs of the later layers
    assert result.int8_drift is not None and result.int8_drift["layers"] == len(result.int8_ranges)
    assert result.int8_drift["ratio_max"] != result.int8_drift["ratio_min"]
    first = {name: r.clone() for name, r in result.calibration.ranges.items()}
    assert any(not torch.equal(first[name], result.int8_ranges[name]) for name in first)


def test_onnxruntime_int8_accuracy_within_1_point_of_float32(int8_adapted, tmp_path):
    result = int8_adapted
    model, val = result.model.cpu().eval(), result.split.val
    compiled = compile_model(model, val.inputs[:8], "onnxruntime", tmp_path, int8_ranges=result.int8_ranges)
    with torch.no_grad():
        fp32 = accuracy_of(batched_logits(lambda x: call_model(model, x), val.inputs, 64), val.labels)
    int8 = accuracy_of(batched_logits(compiled.predict, val.inputs, 64), val.labels)
    assert fp32 > 0.75, "the adapted model must be worth quantizing for the comparison to mean something"
    assert abs(int8 - fp32) <= 0.01, (int8, fp32)
    assert compiled.report.details["pattern_check"]["ok"] and result.pruning is not None
    assert set(compiled.report.details["pattern_check"]["found"]) == set(result.pruning.pruned)
    # why the ranges are re-measured: the calibration pass's own (before pruning and training) lose far more
    stale = compile_model(model, val.inputs[:8], "onnxruntime", tmp_path / "stale",
                          int8_ranges=made(result.calibration, "calibrate").ranges)
    assert accuracy_of(batched_logits(stale.predict, val.inputs, 64), val.labels) < int8 - 0.05


def test_a_method_without_calibration_gets_only_the_pass_on_the_adapted_model(digits_task):
    config = AdaptConfig(method="bn_bias", epochs=1, batch_size=32, device="cpu", quantize="int8")
    result = adapt(tiny_classifier(), lambda t: preprocess_images(t.x, image_size=16), digits_task, config)
    assert "calibrate" not in result.metrics["stage_seconds"] and result.calibration is None
    assert result.int8_ranges is not None and set(result.int8_ranges) == {
        name for name, _ in tiny_classifier().named_parameters() if name.startswith("backbone.") and name.endswith(
            "weight") and not name.startswith(("backbone.1.", "backbone.4."))}  # the convs and the Linear, not BatchNorm
    assert result.int8_drift is None

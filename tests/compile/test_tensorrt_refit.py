"""Refitting a TensorRT engine for a task switch: what can be checked without TensorRT (the state-dict ->
ONNX-initializer map on real exported graphs, what a switch sends, the refusals, the error without TensorRT),
and the refit itself where TensorRT exists."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edged.compile.inputs import call_model
from edged.compile.onnx_export import export_onnx
from edged.compile.refit_map import RefitMap, refit_arrays, refit_map
from edged.compile.task_switch import changed_tensors
from edged.compile.tensorrt_builder import probe as tensorrt_probe
from edged.errors import Unavailable, Unsupported

TENSORRT_OK, TENSORRT_WHY = tensorrt_probe()


def _second_task(model: torch.nn.Module) -> torch.nn.Module:
    """Another task on the base, same 2:4 pattern: new values at fc1's kept positions and a new head."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc1.weight.mul_(1.5)
        other.head.weight.mul_(0.5)  # the head is 2:4 in this tiny model too: zeros stay zeros
    return other


def _initializers(path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.fixture
def exported(pruned_mlp, tmp_path):
    """(first task, second task, x, prune report, refit map of the first's graph, the second's own export)."""
    model, report, x = pruned_mlp
    other = _second_task(model)
    first = export_onnx(model, x, tmp_path / "first.onnx")
    second = export_onnx(other, x, tmp_path / "second.onnx")
    return model, other, x, report, refit_map(first, model.state_dict(), report.pruned), second


def test_every_weight_is_found_in_the_exported_graph_also_where_the_exporter_renamed_and_transposed_it(exported):
    model, _, _, report, mapping, _ = exported
    floats = {n for n, t in model.state_dict().items() if t.is_floating_point()}
    assert set(mapping.initializers) == floats and mapping.unmapped == {}
    # Linears on (B, T, C) inputs: the exporter stores W^T under a generated name
    assert sorted(mapping.transposed) == ["fc1.weight", "fc2.weight"]
    assert mapping.initializers["fc1.weight"] != "fc1.weight" and mapping.initializers["odd.weight"] == "odd.weight"
    assert mapping.two_four == sorted(report.pruned)


def test_a_switch_sends_what_the_next_tasks_own_graph_holds_under_the_same_names(exported, tmp_path):
    model, other, _, _, mapping, second = exported
    changed = changed_tensors(model.state_dict(), other.state_dict())
    assert changed == ["fc1.weight", "head.weight"]
    sent = refit_arrays(mapping, other.state_dict(), changed)
    assert set(sent) == {mapping.initializers["fc1.weight"], "head.weight"}
    theirs = _initializers(second)  # an independent reference: the second task exported on its own
    assert refit_map(second, other.state_dict()).initializers == mapping.initializers  # names stable across tasks
    for init, array in sent.items():
        assert array.dtype == np.float32 and np.array_equal(array, theirs[init]), init
    loaded = RefitMap.load(mapping.save(tmp_path / "refit_map.json"))
    assert loaded == mapping


def test_a_switch_that_breaks_a_2_4_layer_or_names_an_unmapped_tensor_is_refused(exported):
    _, other, _, _, mapping, _ = exported
    dense = {**other.state_dict(), "fc1.weight": torch.ones_like(other.fc1.weight)}
    with pytest.raises(Unsupported, match="2:4"):
        refit_arrays(mapping, dense, ["fc1.weight"])
    folded = RefitMap({**mapping.initializers}, list(mapping.transposed), [], {"extra.weight": "folded"})
    with pytest.raises(Unsupported, match="rebuild"):
        refit_arrays(folded, {"extra.weight": torch.ones(4)}, ["extra.weight"])


@pytest.mark.skipif(TENSORRT_OK, reason="TensorRT is present: the refit itself is tested below")
def test_without_tensorrt_the_refitter_says_so(exported):
    from edged.compile.tensorrt_refit import EngineRefitter

    mapping = exported[4]
    with pytest.raises(Unavailable, match="TensorRT"):
        EngineRefitter(None, mapping)  # type: ignore[arg-type]  # never reached: TensorRT is checked first


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not TENSORRT_OK, reason=TENSORRT_WHY)
def test_a_refitted_engine_computes_the_second_task(exported, tmp_path):
    from edged.compile.tensorrt_builder import EngineRunner, build_engine
    from edged.compile.tensorrt_refit import EngineRefitter

    model, other, x, _, mapping, _ = exported
    plan, _ = build_engine(tmp_path / "first.onnx", x, tmp_path / "model.engine", max_batch=8)
    runner = EngineRunner(plan)
    assert runner.engine.refittable
    torch.testing.assert_close(runner(x).float().cpu(), call_model(model, x), atol=5e-2, rtol=5e-2)
    done = EngineRefitter(runner.engine, mapping).refit(other.state_dict(),
                                                        changed_tensors(model.state_dict(), other.state_dict()))
    assert mapping.initializers["fc1.weight"] in done["sent"]
    torch.testing.assert_close(runner(x).float().cpu(), call_model(other, x), atol=5e-2, rtol=5e-2)

"""A task switch on a compiled model: the tensors it changes, and the cusparselt backend recompressing only the
layers the switch changes (in place, so a captured CUDA graph replays the new task)."""

import copy

import pytest
import torch

from edged.compile.inputs import call_model
from edged.compile.semi_structured import probe as cusparselt_probe
from edged.compile.task_switch import changed_tensors, recompress_changed_
from edged.errors import InvalidInput

CUSPARSELT_OK, CUSPARSELT_WHY = cusparselt_probe()


def _second_task(model: torch.nn.Module, layers: tuple[str, ...]) -> torch.nn.Module:
    """Another task on the same base and 2:4 pattern: new values at the kept positions of `layers`, a new head."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name in (*layers, "head.weight"):
            weight = other.get_parameter(name)
            weight.mul_(1 + torch.rand(weight.shape, generator=generator))  # zeros stay zeros
    return other


def test_a_switch_changes_the_tensors_whose_values_differ_and_only_those(pruned_mlp):
    model, _, x = pruned_mlp
    other = _second_task(model, ("fc1.weight",))
    changed = changed_tensors(model.state_dict(), other.state_dict())
    assert changed == ["fc1.weight", "head.weight"]
    switched = copy.deepcopy(model)
    assert recompress_changed_(switched, other.state_dict(), changed) == {"fc1.weight": "copied", "head.weight": "copied"}
    assert torch.equal(call_model(switched, x), call_model(other, x))
    with pytest.raises(InvalidInput):
        changed_tensors(model.state_dict(), {k: v for k, v in other.state_dict().items() if k != "head.bias"})


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_cusparselt_recompresses_only_the_changed_layers_and_the_captured_graph_serves_the_new_task(pruned_mlp):
    from edged.compile.cuda_graph import GraphedRunner
    from edged.compile.semi_structured import DTYPE, SemiSparseLinear, torch_semi_structured_weight

    model, _, x = pruned_mlp
    other = _second_task(model, ("fc1.weight", "fc2.weight"))
    with torch.inference_mode():  # as the backend builds its compiled model
        compiled = copy.deepcopy(model).to("cuda", DTYPE).eval()
        compiled.fc1 = SemiSparseLinear(compiled.fc1.weight, compiled.fc1.bias)  # edged's cuSPARSELt binding
        compiled.odd = SemiSparseLinear(compiled.odd.weight, compiled.odd.bias)
        compiled.fc2.weight = torch_semi_structured_weight(compiled.fc2.weight, cutlass=False)  # torch's tensor
    inputs = x.to("cuda", DTYPE)
    runner = GraphedRunner(lambda batch: call_model(compiled, batch))
    reference = {name: copy.deepcopy(m).to("cuda", DTYPE) for name, m in (("first", model), ("second", other))}
    with torch.inference_mode():
        torch.testing.assert_close(runner(inputs), call_model(reference["first"], inputs), atol=2e-2, rtol=2e-2)
    odd_data, fc1_data, fc2_weight = compiled.odd.compressed.data, compiled.fc1.compressed.data, compiled.fc2.weight
    odd_bytes, fc1_bytes = odd_data.clone(), fc1_data.clone()
    fc2_packed = fc2_weight.packed.clone()

    changed = changed_tensors(model.state_dict(), other.state_dict())
    assert changed == ["fc1.weight", "fc2.weight", "head.weight"]
    done = recompress_changed_(compiled, other.state_dict(), changed)
    assert done["fc1.weight"] == "edged cuSPARSELt: recompressed in place"
    assert done["fc2.weight"] == "torch semi-structured (cuSPARSELt): recompressed in place"
    assert done["head.weight"] == "copied" and "odd.weight" not in done
    assert compiled.odd.compressed.data is odd_data and torch.equal(odd_data, odd_bytes)  # untouched
    assert compiled.fc1.compressed.data is fc1_data and not torch.equal(fc1_data, fc1_bytes)  # new values, same buffer
    assert compiled.fc2.weight is fc2_weight and not torch.equal(fc2_weight.packed, fc2_packed)
    with torch.inference_mode():
        after = runner(inputs)  # the graph captured for the first task, replayed
        torch.testing.assert_close(after, call_model(reference["second"], inputs), atol=2e-2, rtol=2e-2)
        assert not torch.allclose(after, call_model(reference["first"], inputs), atol=2e-2, rtol=2e-2)

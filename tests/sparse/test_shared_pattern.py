"""The stored form of a base's shared 2:4 pattern, pruning to it, and combining several tasks' importance."""

import copy

import pytest
import torch

from edged.errors import Conflict, InvalidInput
from edged.sparse.layers import weight_layers
from edged.sparse.nm import check_2_4, nm_keep_mask, prune_2_4_
from edged.sparse.shared_pattern import apply_pattern_, combined_importance, pack_pattern, pattern_id, unpack_pattern

from tiny_model import TinyCNN, dense_nonzero_


def _pruned():
    model = dense_nonzero_(TinyCNN())
    layers = weight_layers(model)
    scores = {n: layer.weight.detach().abs() for n, layer in layers.items()}  # ineligible layers are never scored
    report = prune_2_4_(model, scores, layers)
    return model, report


def test_a_pattern_packs_to_one_bit_per_entry_and_back_bit_for_bit():
    _, report = _pruned()
    data = pack_pattern(report.keep_masks)
    back = unpack_pattern(data)
    assert back.keys() == report.keep_masks.keys()
    assert all(torch.equal(back[n], report.keep_masks[n]) for n in back)
    entries = sum(mask.numel() for mask in report.keep_masks.values())
    assert entries / 8 <= len(data) < entries / 8 + 200 * len(back)  # the bits plus a header line per layer
    assert pattern_id(pack_pattern(back)) == pattern_id(data)  # the same pattern, the same name


def test_pruning_to_a_pattern_keeps_exactly_its_positions_on_another_copy_of_the_base():
    _, report = _pruned()
    other = dense_nonzero_(TinyCNN())
    torch.manual_seed(5)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))  # other values: its own importance would pick other positions
    layers = weight_layers(other)
    first = next(iter(report.keep_masks))  # a prunable layer
    assert not torch.equal(nm_keep_mask(layers[first].weight.detach().abs()), report.keep_masks[first])
    applied = apply_pattern_(other, report.keep_masks, layers)
    for name, keep in report.keep_masks.items():
        weight = layers[name].weight.detach()
        assert torch.equal(applied.keep_masks[name], keep) and check_2_4(weight)
        assert torch.equal(weight == 0, ~keep)
    assert applied.ineligible == report.ineligible


def test_a_pattern_that_does_not_fit_the_model_is_refused():
    model, report = _pruned()
    layers = weight_layers(model)
    name = next(iter(report.keep_masks))
    missing = {n: m for n, m in report.keep_masks.items() if n != name}
    with pytest.raises(Conflict):
        apply_pattern_(copy.deepcopy(model), missing, layers)
    loose = dict(report.keep_masks)
    loose[name] = torch.zeros_like(loose[name])  # keeps nothing: not a 2:4 pattern
    with pytest.raises(InvalidInput):
        apply_pattern_(copy.deepcopy(model), loose, layers)
    with pytest.raises(InvalidInput):
        unpack_pattern(b"not safetensors")


def test_combined_importance_weighs_each_task_equally_whatever_its_scale():
    a = {"w": torch.tensor([[4.0, 3.0, 0.0, 0.0]])}
    b = {"w": torch.tensor([[0.0, 0.0, 300.0, 400.0]])}  # a hundred times larger: it must not win for that
    c = {"w": torch.tensor([[0.0, 0.0, 3.0, 4.0]])}
    assert torch.allclose(combined_importance([a, b])["w"], combined_importance([a, c])["w"])
    assert nm_keep_mask(combined_importance([a, a, c])["w"]).tolist() == [[True, True, False, False]]

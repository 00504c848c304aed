"""The resident base's flat buffers: the model is unchanged by the move, a delta is placed once into flat
indices, and a delta that does not fit its base is refused before anything is written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiny_model import tiny_classifier
from edged.errors import Corrupt
from edged.sparse.shared_pattern import pack_keep_mask
from edged.tasks.delta import TaskDelta
from edged.tasks.flat import FlatWeights, backbone_tensors
from edged.tasks.indices import BlockIndices, FlatIndices, block_starts, encode_indices
from edged.tasks.resident import ResidentModel


def _head(classes: int = 2, features: int = 64) -> nn.Linear:
    return nn.Linear(features, classes).requires_grad_(False)


def test_the_moved_model_computes_what_it_did_and_its_tensors_are_views_of_one_buffer():
    model = tiny_classifier(3).eval()
    x = torch.randn(4, 3, 16, 16)
    before = model(x)
    flat = FlatWeights(backbone_tensors(model))
    assert torch.equal(model(x), before)
    (buffer,) = flat.buffers.values()  # one fp32 buffer holds every floating backbone tensor
    start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel() * buffer.element_size()
    floating = [t for name, t in model.state_dict().items() if not name.startswith("head.") and t.is_floating_point()]
    assert all(start <= t.data_ptr() < end for t in floating)
    assert buffer.numel() == sum(t.numel() for t in floating)


def test_a_delta_writes_the_named_entries_and_nothing_else():
    model = tiny_classifier(2).eval()
    names = [n for n, t in model.state_dict().items() if not n.startswith("head.") and t.dim() > 1]
    name = names[1]
    before = {n: t.clone() for n, t in model.state_dict().items()}
    resident = ResidentModel(model, lambda task: task.x, torch.device("cpu"))
    indices, values = torch.tensor([0, 5, 7]), torch.tensor([1.5, -2.0, 3.25])
    placed = resident.place(TaskDelta({name: (indices, values)}, {}, _head()), "a delta")
    resident.activate_("t", placed)
    after = model.state_dict()
    assert torch.equal(after[name].reshape(-1)[indices], values)
    changed = [n for n in before if not n.startswith("head.") and not torch.equal(before[n], after[n])]
    assert changed == [name]
    resident.deactivate_()
    assert all(torch.equal(before[n], model.state_dict()[n]) for n in before if not n.startswith("head."))


def test_a_2_4_pattern_zeroes_its_pruned_entries_a_trained_entry_wins_and_the_base_comes_back():
    model = tiny_classifier(2).eval()
    name = "backbone.3.weight"  # (32, 16, 1, 1): 512 entries
    before = {n: t.clone() for n, t in model.state_dict().items()}
    keep = torch.zeros(512, dtype=torch.bool)
    keep[::2] = True  # every other entry kept
    trained_at = torch.tensor([2, 3])  # one on a kept entry, one on a pruned entry: the trained value wins there
    values = torch.tensor([1.5, -2.0])
    delta = TaskDelta({name: (trained_at, values)}, {}, _head(), {name: pack_keep_mask(keep)})
    resident = ResidentModel(model, lambda task: task.x, torch.device("cpu"))
    placed = resident.place(delta, "a 2:4 delta")
    assert sum(indices.decode().numel() for indices in placed.zeros.values()) == 255  # 256 pruned, one trained
    resident.activate_("t", placed)
    weight = model.state_dict()[name].reshape(-1)
    expected = torch.where(keep, before[name].reshape(-1), torch.zeros(()))
    expected[trained_at] = values
    assert torch.equal(weight, expected)
    resident.deactivate_()
    assert all(torch.equal(before[n], model.state_dict()[n]) for n in before if not n.startswith("head."))


def test_tied_tensors_share_one_slot():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    flat = FlatWeights(dict(model.state_dict(keep_vars=True)))
    assert flat.slots["0.weight"] == flat.slots["2.weight"]
    (buffer,) = flat.buffers.values()
    assert buffer.numel() == 4 * 4 + 4  # stored once


@pytest.mark.parametrize("sparse, dense, message", [
    ({"backbone.nope.weight": (torch.tensor([0]), torch.tensor([1.0]))}, {}, "does not have"),
    ("OUT_OF_RANGE", {}, "outside its"),
    ("NEGATIVE", {}, "outside its"),
    ({}, "WRONG_SHAPE", "its base's is"),
])
def test_a_delta_that_does_not_fit_its_base_is_refused_and_the_base_is_untouched(sparse, dense, message):
    model = tiny_classifier(2).eval()
    name, tensor = next((n, t) for n, t in model.state_dict().items() if t.dim() > 1)
    if sparse == "OUT_OF_RANGE":
        sparse = {name: (torch.tensor([tensor.numel()]), torch.tensor([1.0]))}
    if sparse == "NEGATIVE":
        sparse = {name: (torch.tensor([-1]), torch.tensor([1.0]))}
    if dense == "WRONG_SHAPE":
        dense = {name: torch.zeros(3)}
    before = {n: t.clone() for n, t in model.state_dict().items()}
    resident = ResidentModel(model, lambda task: task.x, torch.device("cpu"))
    with pytest.raises(Corrupt, match=message):
        resident.place(TaskDelta(sparse, dense, _head()), "the delta of task t")
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())


@pytest.mark.parametrize("indices, stored", [
    ([3, 10, 10, 30_000, 60_000], torch.int16),  # gaps fit: 2 bytes an entry
    ([5, 100_000], torch.int32),  # a gap past int16: the indices themselves
    ([], torch.int32),
])
def test_flat_indices_decode_to_what_was_encoded(indices, stored):
    encoded = FlatIndices.encode(torch.tensor(indices, dtype=torch.int64), buffer_numel=200_000)
    assert encoded.stored.dtype == stored
    assert encoded.decode().tolist() == indices
    assert encoded.nbytes == len(indices) * torch.tensor([], dtype=stored).element_size()


def test_block_indices_decode_to_what_was_encoded_and_cost_a_block_not_an_entry():
    shape = torch.Size((4, 40))  # rows of 40: blocks of 16, 16 and 8 entries
    local = torch.tensor([0, 1, 15, 16, 39, 40, 41, 47, 150])
    starts = block_starts(local, shape)
    assert starts.tolist() == [0, 0, 0, 16, 32, 40, 40, 40, 136]
    encoded = BlockIndices.encode(local + 100, starts + 100, buffer_numel=300)
    assert encoded.decode().tolist() == (local + 100).tolist()
    assert encoded.blocks == 5 and encoded.nbytes == 5 * (2 + 2)
    full = torch.arange(0, 160, 2)  # half of every block, as a 2:4 pattern's zeros: block-wise is the smaller
    assert isinstance(encode_indices(full, block_starts(full, shape), 300), BlockIndices)
    assert isinstance(encode_indices(local, starts, 300), FlatIndices)  # about one entry a block: flat gaps
    with pytest.raises(ValueError, match="accepted: smaller, flat, blocks"):
        encode_indices(local, starts, 300, "bitmaps")

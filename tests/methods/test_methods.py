"""Every registered method, parametrised from the registry itself."""

import typing

import pytest
import torch
import torch.nn.functional as F

from tiny_model import tiny_classifier
from edged.pipeline.config import AdaptConfig
from edged.data.preprocess import preprocess_images
from edged.errors import InvalidInput
from edged.methods import all_methods, get_method
from edged.methods.options import MaskOptions
from edged.methods.base import ScoreConfig, TaskBatches, backbone_layers
from edged.methods.sparse_delta import prepare_sparse, select_mask
from edged.pipeline.adapt import adapt
from edged.sparse.nm import check_2_4

METHODS = all_methods()
SPARSE = [name for name, m in METHODS.items() if m.kind == "sparse"]
ADAPTERS = [name for name, m in METHODS.items() if m.kind == "adapter"]
ALLOCATIONS = typing.get_args(MaskOptions.model_fields["allocation"].annotation)


def test_registry_holds_the_documented_methods():
    assert {"taskedge", "magnitude", "fisher", "taso", "random"} <= set(SPARSE)
    assert {"head", "bn_bias", "full", "lora", "taskedge_lora", "taso_lora"} <= set(ADAPTERS)


def test_unknown_method_names_the_accepted_ones():
    with pytest.raises(InvalidInput) as error:
        get_method("nope")
    assert "taskedge" in error.value.detail["accepted"]


@pytest.mark.parametrize("name", SPARSE)
def test_scores_are_finite_and_shaped_like_the_weights(name, digits_inputs):
    model = tiny_classifier()
    batches = TaskBatches(digits_inputs[0][:64], digits_inputs[1][:64], batch_size=32)
    scores = METHODS[name].function(model, batches, ScoreConfig(seed=0))
    layers = backbone_layers(model)
    assert set(scores) == set(layers)
    for weight_name, score in scores.items():
        assert score.shape == layers[weight_name].weight.shape
        assert torch.isfinite(score).all()
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


@pytest.mark.parametrize("allocation", ALLOCATIONS)
@pytest.mark.parametrize("name", SPARSE)
def test_sparse_method_meets_the_budget_exactly(name, allocation, digits_inputs):
    model = tiny_classifier()
    batches = TaskBatches(digits_inputs[0][:64], digits_inputs[1][:64], batch_size=32)
    scores = METHODS[name].function(model, batches, ScoreConfig(seed=0))
    config = AdaptConfig(method=name, budget=0.01, allocation=allocation)
    masks = select_mask(model, scores, config)
    total = sum(l.weight.numel() for l in backbone_layers(model).values())
    adaptation = prepare_sparse(name, model, masks)
    assert adaptation.entries == round(0.01 * total)


@pytest.mark.parametrize("allocation", ["neuron_mass", "layer_mass"])
def test_scores_boosted_towards_other_tasks_blocks_pick_entries_inside_layers_not_their_shares(allocation,
                                                                                                 digits_inputs):
    """Alignment multiplies one layer's scores: the layers' shares still follow the task's own importance."""
    model = tiny_classifier()
    batches = TaskBatches(digits_inputs[0][:64], digits_inputs[1][:64], batch_size=32)
    own = METHODS["taskedge"].function(model, batches, ScoreConfig(seed=0))
    first = next(iter(own))
    boosted = {name: s * 50 if name == first else s for name, s in own.items()}
    config = AdaptConfig(method="taskedge", budget=0.01, allocation=allocation)
    shares = {name: int(m.sum()) for name, m in select_mask(model, own, config).items()}
    assert {name: int(m.sum()) for name, m in select_mask(model, boosted, config, shares_from=own).items()} == shares
    assert int(select_mask(model, boosted, config)[first].sum()) > shares[first]  # without it, the boost takes budget


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_trains_and_merges_into_a_plain_model(name, digits_inputs):
    x, y = digits_inputs[0][:32], digits_inputs[1][:32]
    model = tiny_classifier().eval()
    config = AdaptConfig(method=name, budget=0.05, lora_rank=2)
    adaptation = METHODS[name].function(model, TaskBatches(x, y, batch_size=16), METHODS[name].options_for(config), None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in adaptation.parameters) == adaptation.entries
    assert all(any(p is q for q in trainable) for p in adaptation.parameters)
    if adaptation.parameters:
        optimizer = torch.optim.AdamW(adaptation.parameters, lr=1e-2)
        for _ in range(2):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    with torch.no_grad():
        expected = model(x)
        adaptation.merge_()
        merged = model(x)
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)
    plain = tiny_classifier()
    assert set(dict(model.named_parameters())) == set(dict(plain.named_parameters()))


KEEPS_2_4 = [name for name, m in METHODS.items() if m.keeps_2_4]


def test_the_registry_says_which_methods_keep_2_4():
    assert {"taskedge", "magnitude", "fisher", "taso", "random", "head", "bn_bias"} == set(KEEPS_2_4)


@pytest.mark.parametrize("name", KEEPS_2_4)
def test_a_method_that_says_it_keeps_2_4_does(name, digits_task):
    """The capability is checked by running it: prune, train, merge, and every pruned weight is still 2:4."""
    lr = {} if name == "head" else {"lr": 3e-2}  # head trains no backbone part: a backbone lr is refused
    config = AdaptConfig(method=name, sparsity="2:4", dense_reference=False, epochs=1, batch_size=32, budget=0.01,
                         device="cpu", **lr)
    result = adapt(tiny_classifier(), lambda task: preprocess_images(task.x, image_size=16), digits_task, config)
    weights = dict(result.model.named_parameters())
    assert result.pruning is not None and result.pruning.pruned
    assert all(check_2_4(weights[weight].detach()) for weight in result.pruning.pruned)
    assert result.metrics["sparsity"]["pattern_holds"]


@pytest.mark.parametrize(("name", "rank"), [("lora", 8), ("taskedge_lora", 8), ("taso_lora", 1)])
def test_a_low_rank_method_left_without_a_rank_uses_its_own_default(name, rank, digits_inputs):
    """A job leaves `lora_rank` null: LoRA and masked LoRA train rank 8, TASO rank 1; a rank asked for is kept."""
    x, y = digits_inputs[0][:32], digits_inputs[1][:32]
    for asked, expected in [(None, rank), (3, 3)]:
        model = tiny_classifier().eval()
        config = AdaptConfig(method=name, budget=0.05, lora_rank=asked)
        adaptation = METHODS[name].function(model, TaskBatches(x, y, batch_size=16), METHODS[name].options_for(config),
                                            None)
        ranks = {a.shape[0] for a in adaptation.parameters[0::2]}  # each layer's A (rank, ...), then its B
        assert ranks == {expected}, (asked, ranks)

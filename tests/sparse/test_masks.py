import pytest
import torch

from edged.errors import InvalidInput
from edged.sparse.masks import (budget_to_count, count_selected, global_topk, layer_mass_topk, layer_masses,
                                nm_limited_scores, per_neuron_topk, restrict_scores)


def _scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.rand(16, 32, generator=g), "b.weight": torch.rand(48, 16, 3, 3, generator=g),
            "c.weight": torch.rand(8, 64, generator=g)}


@pytest.mark.parametrize("count", [1, 7, 72, 73, 500, 2000])
def test_per_neuron_budget_met_exactly(count):
    masks = per_neuron_topk(_scores(), count=count)
    assert count_selected(masks) == count
    assert all(m.shape == s.shape for m, s in zip(masks.values(), _scores().values()))


def test_per_neuron_spreads_over_every_layer_and_row():
    masks = per_neuron_topk(_scores(), count=3 * 72)  # 72 rows in all: exactly 3 per row
    for mask in masks.values():
        assert (mask.reshape(mask.shape[0], -1).sum(1) == 3).all()


def test_per_neuron_k_keeps_the_best_entries_of_each_row():
    scores = _scores()
    masks = per_neuron_topk(scores, k=2)
    flat = scores["a.weight"]
    expected = flat.topk(2, dim=1).indices.sort(1).values
    assert torch.equal(masks["a.weight"].nonzero()[:, 1].reshape(16, 2), expected)


def test_ties_are_broken_deterministically_by_position():
    scores = {"w": torch.ones(4, 8)}
    masks = per_neuron_topk(scores, k=3)
    assert torch.equal(masks["w"][0], torch.tensor([True, True, True] + [False] * 5))
    assert torch.equal(per_neuron_topk(scores, count=5)["w"], per_neuron_topk(scores, count=5)["w"])


def test_masks_are_deterministic():
    a = per_neuron_topk(_scores(1), count=123)
    b = per_neuron_topk(_scores(1), count=123)
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("count", [1, 100, 999])
def test_global_topk_budget_and_choice(count):
    scores = _scores()
    masks = global_topk(scores, count)
    assert count_selected(masks) == count
    chosen = torch.cat([scores[n][masks[n]] for n in scores])
    left = torch.cat([scores[n][~masks[n]] for n in scores])
    assert chosen.min() >= left.max()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("count", [1, 7, 100, 999, 1000, 7936])
def test_layer_mass_budget_met_exactly_with_the_best_of_each_layer(seed, count):
    scores = _scores(seed)
    scores["c.weight"] = scores["c.weight"] * 50  # the small layer holds most of the mass: its cap binds
    masks = layer_mass_topk(scores, count)
    assert count_selected(masks) == count
    for name, score in scores.items():
        chosen, left = score[masks[name]], score[~masks[name]]
        if chosen.numel() and left.numel():
            assert chosen.min() >= left.max()  # the top entries within the layer


def test_layer_mass_shares_follow_each_layers_mass():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.full((10, 100), 3.0), "b": torch.full((10, 100), 1.0), "c": torch.rand(4, 8, generator=g) * 0}
    masks = layer_mass_topk(scores, 101)  # quotas 75.75 / 25.25 / 0: largest remainder gives a the extra entry
    assert [int(m.sum()) for m in masks.values()] == [76, 25, 0]
    capped = layer_mass_topk({"a": torch.full((2, 5), 100.0), "b": torch.full((10, 100), 1.0)}, 50)
    assert [int(m.sum()) for m in capped.values()] == [10, 40]  # a is full; what it cannot take goes to b


def test_layer_mass_never_selects_excluded_entries():
    limited = nm_limited_scores(_scores(), 2, 4)
    masks = layer_mass_topk(limited, 2000)
    assert count_selected(masks) == 2000
    assert all(not torch.isneginf(limited[n][masks[n]]).any() for n in masks)
    with pytest.raises(InvalidInput, match="selectable"):
        layer_mass_topk(limited, 3969)  # half of the 7936 weights are selectable under 2:4


def test_nm_limit_holds():
    scores = nm_limited_scores(_scores(), 2, 4)
    masks = per_neuron_topk(scores, count=500)
    assert count_selected(masks) == 500
    for mask in masks.values():
        groups = mask.reshape(mask.shape[0], -1, 4).sum(-1)
        assert groups.max() <= 2


def test_restrict_keeps_mask_inside_allowed_positions():
    scores = _scores()
    allowed = {n: torch.rand(s.shape, generator=torch.Generator().manual_seed(3)) < 0.5 for n, s in scores.items()}
    masks = per_neuron_topk(restrict_scores(scores, allowed), count=300)
    assert all(not (masks[n] & ~allowed[n]).any() for n in masks)


@pytest.mark.parametrize("budget", [0, -0.1, 1.5])
def test_bad_budget(budget):
    with pytest.raises(InvalidInput, match="budget"):
        budget_to_count(budget, 1000)


def test_k_larger_than_a_row():
    with pytest.raises(InvalidInput, match="k=40"):
        per_neuron_topk(_scores(), k=40)


def test_budget_over_allowed_entries_is_rejected():
    scores = nm_limited_scores({"w": torch.rand(4, 8)}, 1, 4)  # 8 selectable entries
    with pytest.raises(InvalidInput, match="excluded"):
        per_neuron_topk(scores, count=9)


def test_per_neuron_places_budgets_beyond_one_extra_per_row():
    scores = {"short": torch.rand(32, 9), "long": torch.rand(8, 512)}  # 9 entries per row at most in "short"
    masks = per_neuron_topk(scores, count=2000)
    assert count_selected(masks) == 2000
    assert masks["short"].all()  # the short layer is full, the rest went to the long one


@pytest.mark.parametrize("count", [1, 7, 72, 100, 999, 2000])
def test_neuron_mass_meets_the_budget_in_layer_mass_shares_spread_over_each_layers_rows(count):
    scores = _scores()
    scores["c.weight"] = scores["c.weight"] * 20  # the 8-row layer holds most of the mass
    masks = per_neuron_topk(scores, count=count, masses=layer_masses(scores))
    assert count_selected(masks) == count
    if count < 72:  # below one entry per row, the layers share as layer_mass's do
        assert [int(m.sum()) for m in masks.values()] == [int(m.sum()) for m in layer_mass_topk(scores, count).values()]
    for mask in masks.values():
        per_row = mask.reshape(mask.shape[0], -1).sum(1)
        assert int(per_row.max() - per_row.min()) <= 1  # a row gets its next entry only once every row has as many


def test_neuron_mass_gives_the_layer_with_the_mass_more_than_its_rows_would():
    scores = _scores()
    scores["c.weight"] = scores["c.weight"] * 20  # 8 of the 72 rows; masses about 256 : 3,456 : 5,120
    by_mass, by_rows = per_neuron_topk(scores, count=100, masses=layer_masses(scores)), per_neuron_topk(scores, count=100)
    # one entry per row (72), then the 28 left: by rows c gets 28 x 8 / 72 = 3, by mass 28 x 0.58 = 16
    assert int(by_rows["c.weight"].sum()) == 8 + 3 and int(by_mass["c.weight"].sum()) == 8 + 16


def test_neuron_mass_falls_back_to_rows_where_no_layer_has_mass():
    zeros = {name: torch.zeros_like(s) for name, s in _scores().items()}
    assert all(torch.equal(a, b) for a, b in zip(per_neuron_topk(zeros, count=50, masses=layer_masses(zeros)).values(),
                                                   per_neuron_topk(zeros, count=50).values()))

import pytest
import torch
from torch import nn

from edged.errors import InvalidInput
from edged.sparse.layers import weight_layers
from edged.sparse.nm import check_2_4, group_nonzeros, nm_keep_mask, nm_violations, prune_2_4_

from tiny_model import TinyCNN, dense_nonzero_


def test_keep_mask_picks_top_two_per_group_of_linear_rows():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.2, 4.0, 3.0, 2.0, 1.0]])
    mask = nm_keep_mask(score)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False]]


def test_keep_mask_ties_go_to_lower_index():
    mask = nm_keep_mask(torch.ones(2, 8))
    assert mask[:, :4].tolist() == [[True, True, False, False]] * 2
    assert torch.equal(mask, nm_keep_mask(torch.ones(2, 8)))


def test_conv_groups_run_along_input_channels_at_each_kernel_position():
    score = torch.rand(4, 8, 3, 3)
    mask = nm_keep_mask(score)
    # (out, kh, kw, in): every 4 consecutive input channels keep exactly the 2 best
    per_position = mask.permute(0, 2, 3, 1).reshape(-1, 4)
    assert (per_position.sum(1) == 2).all()
    best = score.permute(0, 2, 3, 1).reshape(-1, 4).topk(2, dim=1).indices
    assert per_position.gather(1, best).all()


def test_prune_gives_exactly_two_nonzeros_per_group_and_lists_ineligible():
    model = dense_nonzero_(TinyCNN())
    layers = weight_layers(model)
    before = {n: l.weight.detach().clone() for n, l in layers.items()}
    scores = {n: l.weight.detach().abs() for n, l in layers.items()}
    report = prune_2_4_(model, scores, layers)

    assert set(report.pruned) == {"conv.weight", "fc.weight", "head.weight"}
    assert set(report.ineligible) == {"stem.weight", "depthwise.weight"}
    assert "groups" in report.ineligible["depthwise.weight"]
    for name in report.pruned:
        w = layers[name].weight
        assert (group_nonzeros(w) == 2).all(), name
        assert check_2_4(w)
        kept = report.keep_masks[name]
        assert torch.equal(w != 0, kept)
        assert torch.equal(w[kept], before[name][kept])  # kept weights untouched
    for name in report.ineligible:
        assert torch.equal(layers[name].weight, before[name])  # dense, bit-identical


def test_task_importance_can_keep_small_weights():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    act_norm = torch.tensor([10.0, 10.0, 0.1, 0.1])  # ||X_j||: the first inputs matter
    report = prune_2_4_(lin, {"weight": lin.weight.abs() * act_norm}, {"weight": lin})
    assert lin.weight.tolist() == [[1.0, 2.0, 0.0, 0.0]]
    assert report.summary()["kept_fraction_in_pruned_layers"] == 0.5


def test_violations_name_the_group():
    w = torch.ones(2, 8)
    w[0, :2] = 0
    w[0, 4:6] = 0
    found = nm_violations(w)
    assert not check_2_4(w)
    assert found[0].startswith("group 0 of row 1")


def test_bad_scores_are_rejected():
    model = dense_nonzero_(TinyCNN())
    layers = weight_layers(model)
    with pytest.raises(InvalidInput, match="no importance score"):
        prune_2_4_(model, {}, layers)
    scores = {n: torch.rand(3) for n in layers}
    with pytest.raises(InvalidInput, match="shape"):
        prune_2_4_(model, scores, {"fc.weight": layers["fc.weight"]})
    with pytest.raises(InvalidInput, match="NaN"):
        nm_keep_mask(torch.full((2, 4), float("nan")))
    with pytest.raises(InvalidInput, match="groups of 4"):
        nm_keep_mask(torch.rand(2, 6))

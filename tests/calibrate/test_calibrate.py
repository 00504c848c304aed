import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tiny_model import tiny_classifier
from edged.calibrate import calibrate, norm_like_weight
from edged.calibrate.memory import cpu_peak_measurable, measure_peak
from edged.errors import InvalidInput, OutOfBudget
from edged.methods.base import backbone_layers


def test_statistics_agree_across_micro_batch_sizes(digits_inputs):
    x = digits_inputs[0][:60]
    model = tiny_classifier()
    layers = backbone_layers(model)
    results = [calibrate(model, x, layers, micro_batch=b).norms for b in (1, 7, 60)]
    for name in layers:
        for other in results[1:]:
            torch.testing.assert_close(other[name], results[0][name], rtol=1e-4, atol=0)  # float32 forward rounding


def test_conv_statistic_equals_the_norm_of_unfolded_patches():
    conv = nn.Conv2d(3, 16, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(5, 3, 11, 9)
    norms = calibrate(conv, x, {"weight": conv}, micro_batch=2).norms["weight"]
    patches = F.unfold(x.double(), 3, padding=1, stride=2)  # (N, C*kh*kw, L)
    expected = patches.square().sum((0, 2)).sqrt().reshape(3, 3, 3)
    torch.testing.assert_close(norms, expected)


def test_linear_statistic_covers_tokens():
    linear = nn.Linear(8, 16)
    x = torch.randn(4, 5, 8)  # (N, tokens, in)
    norms = calibrate(linear, x, {"weight": linear}, micro_batch=3).norms["weight"]
    torch.testing.assert_close(norms, x.double().reshape(-1, 8).norm(dim=0))


def test_depthwise_norms_follow_each_output_channels_group():
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=4)  # 2 outputs per input channel
    x = torch.randn(3, 4, 6, 6)
    stat = calibrate(conv, x, {"weight": conv}, micro_batch=3).norms["weight"]  # (4, 3, 3)
    like = norm_like_weight(conv, stat)  # (8, 1, 3, 3)
    assert like.shape == conv.weight.shape
    torch.testing.assert_close(like[2, 0], stat[1].float())
    torch.testing.assert_close(like[3, 0], stat[1].float())


def _wide_cnn():
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 16))


@pytest.mark.skipif(not cpu_peak_measurable(), reason="this kernel cannot reset the peak resident set")
def test_budgeted_calibration_stays_under_the_budget_on_cpu():
    model = _wide_cnn()
    layers = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    x = torch.randn(96, 3, 64, 64)
    budget = 64.0
    with measure_peak(torch.device("cpu")) as outside:
        result = calibrate(model, x, layers, memory_budget_mb=budget)
    assert 1 < result.micro_batch < 96
    assert result.peak_memory_mb <= budget
    assert outside.mb <= budget
    reference = calibrate(model, x, layers, micro_batch=96).norms
    for name in layers:
        torch.testing.assert_close(result.norms[name], reference[name], rtol=1e-5, atol=0)


def test_budget_smaller_than_one_sample_fails_clearly():
    model = _wide_cnn()
    layers = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    with pytest.raises(OutOfBudget, match="smaller than one calibration sample") as error:
        calibrate(model, torch.randn(8, 3, 128, 128), layers, memory_budget_mb=0.5)
    assert "memory_budget_mb >=" in error.value.detail["accepted"]


def test_non_positive_budget_is_rejected():
    with pytest.raises(InvalidInput, match="memory_budget_mb"):
        calibrate(nn.Linear(4, 4), torch.randn(2, 4), {"weight": nn.Linear(4, 4)}, memory_budget_mb=0)

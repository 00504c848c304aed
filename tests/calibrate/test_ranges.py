import torch
from torch import nn

from tiny_model import tiny_classifier
from edged.calibrate import calibrate
from edged.calibrate.ranges import AMAX, BINS, PCTL, AbsHistogram
from edged.methods.base import backbone_layers
from edged.pipeline.stage_cache import cached_calibration


def test_amax_and_percentile_of_a_linear_input_across_growing_batches():
    torch.manual_seed(0)
    linear = nn.Linear(8, 16)
    # later micro-batches hold larger values, so the histogram's edge must double several times
    x = torch.cat([torch.randn(20, 50, 8) * scale for scale in (0.01, 0.1, 1.0, 10.0)])  # (80, 50, 8)
    result = calibrate(linear, x, {"weight": linear}, micro_batch=20)
    amax, pctl = result.ranges["weight"]
    a = x.abs().flatten().double()
    assert amax == a.max()
    exact = torch.quantile(a, 0.9999, interpolation="higher")  # the 4th largest of 32,000: a value of the data
    width = float(a.max()) * 2 / BINS  # the final edge is below 2 * amax: one bin is at most this wide
    assert exact - 1e-6 <= pctl <= exact + width


def test_ranges_are_of_each_layers_input_in_the_same_pass_as_the_norms():
    model = tiny_classifier()
    layers = backbone_layers(model)
    x = torch.randn(40, 3, 16, 16)
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = args[0].detach()  # returns None: the output stays the layer's

        return hook

    hooks = [layer.register_forward_hook(keep(name)) for name, layer in layers.items()]
    result = calibrate(model, x, layers, micro_batch=40)  # one batch: the hooks above see every input once
    for hook in hooks:
        hook.remove()
    assert set(result.ranges) == set(result.norms) == set(layers)
    for name, inputs in seen.items():
        assert result.ranges[name][AMAX] == inputs.abs().max().double()
        assert 0 < result.ranges[name][PCTL] <= result.ranges[name][AMAX]


def test_the_histogram_stays_bins_long_however_much_data():
    hist = AbsHistogram()
    for step in range(50):
        hist.add(torch.randn(1000) * (1.5 ** step))
    assert hist.counts.shape == (BINS,) and int(hist.counts.sum()) == 50_000
    assert hist.percentile(100.0) == hist.amax


def test_ranges_survive_the_work_dirs_calibration_file(tmp_path):
    model = tiny_classifier()
    layers = backbone_layers(model)
    x = torch.randn(16, 3, 16, 16)
    first, loaded = cached_calibration(tmp_path, lambda: calibrate(model, x, layers, micro_batch=8))
    again, loaded_again = cached_calibration(tmp_path, lambda: calibrate(model, x, layers, micro_batch=8))
    assert not loaded and loaded_again
    assert set(again.ranges) == set(first.ranges) and set(again.norms) == set(first.norms)
    for name in first.ranges:
        assert torch.equal(again.ranges[name], first.ranges[name])

"""BatchNorm statistics re-estimated after training (`edged.train.batchnorm_stats`): kept when they score at
least as well, and the statistics training left put back, bit for bit, when they score lower."""

from __future__ import annotations

import torch

from edged.data.preprocess import preprocess_images
from edged.methods.base import TaskBatches
from edged.train.batchnorm_stats import reestimate_batchnorm_
from tiny_model import tiny_classifier


def _batches(digits_task) -> TaskBatches:
    return TaskBatches(preprocess_images(digits_task.x[:128], image_size=16), digits_task.y[:128], batch_size=32)


def test_statistics_that_score_lower_are_put_back_and_ones_that_do_not_are_kept(digits_task):
    batches = _batches(digits_task)
    model = tiny_classifier()
    stale = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}

    def distance_from_stale() -> float:  # a score that prefers the statistics training left
        return -sum(float((model.state_dict()[k].float() - v.float()).norm()) for k, v in stale.items())

    report = reestimate_batchnorm_(model, batches, 128, distance_from_stale)
    assert not report.kept and report.accuracy_reestimated < report.accuracy_stale
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stale.items())

    report = reestimate_batchnorm_(model, batches, 128, lambda: -distance_from_stale())  # prefers moving away
    assert report.kept and report.layers == 2 and report.samples == 128
    first_mean = model.state_dict()["backbone.1.running_mean"]
    with torch.no_grad():  # the first BatchNorm's input mean over the samples, per channel: (16,)
        data_mean = model.backbone[0](batches.inputs).mean(dim=(0, 2, 3))
    assert torch.allclose(first_mean, data_mean, atol=1e-5)  # 4 equal batches: the mean of batch means

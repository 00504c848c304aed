"""The head refit after training (`refit_head`): a linear probe on the adapted backbone's features of the
training samples, which never reads the validation samples it is scored on."""

import torch

from tiny_model import tiny_classifier
from edged.data.preprocess import preprocess_images
from edged.data.task import TaskData, stratified_split
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig

# One epoch, so the training loop's best-epoch choice (which reads validation) cannot differ between runs.
OPTIONS = {"method": "taskedge", "epochs": 1, "batch_size": 16, "budget": 0.01, "lr": 3e-2, "head_lr": 3e-2,
           "device": "cpu", "seed": 0}


def _adapt(task, **options):
    config = AdaptConfig(**{**OPTIONS, **options})
    return adapt(tiny_classifier(), lambda t: preprocess_images(t.x, image_size=16), task, config)


def _validation_replaced_by_noise(task: TaskData) -> TaskData:
    """The same task, its validation samples (the split `adapt` makes: stratified by label, seeded) turned to noise."""
    _, val = stratified_split(task.y, range(len(task.classes)), AdaptConfig().val_fraction,
                              torch.Generator().manual_seed(OPTIONS["seed"]))
    x = task.x.clone()
    x[val] = torch.randint_like(x[val], 0, 256)
    return TaskData(task.kind, x, task.y, task.classes)


def test_the_refit_head_comes_from_the_training_samples_only(digits_task):
    clean = _adapt(digits_task)
    noisy = _adapt(_validation_replaced_by_noise(digits_task))
    for name in ("head.weight", "head.bias"):
        assert torch.equal(clean.model.state_dict()[name], noisy.model.state_dict()[name]), name
    # the validation samples did change: what they score moved, what was fit did not
    assert clean.metrics["head_refit"]["val_accuracy"] != noisy.metrics["head_refit"]["val_accuracy"]


def test_the_refit_is_what_the_job_reports_and_can_be_turned_off(digits_task):
    refit = _adapt(digits_task)
    record = refit.metrics["head_refit"]
    assert record["val_accuracy"] == refit.metrics["accuracy_after"]  # the evaluate stage scores the refit head
    assert record["weight_decay"] > 0 and 0.0 <= record["val_accuracy_trained_head"] <= 1.0
    assert "refit_head" in refit.metrics["stage_seconds"]
    kept = _adapt(digits_task, refit_head=False)
    assert "head_refit" not in kept.metrics and "refit_head" not in kept.metrics["stage_seconds"]
    assert kept.metrics["accuracy_after"] == record["val_accuracy_trained_head"]  # the same training, head as trained


def test_a_method_that_fits_only_the_head_is_not_refit(digits_task):
    head = _adapt(digits_task, method="head", lr=None, head_lr="auto", budget=0.001)
    assert "head_refit" not in head.metrics and "refit_head" not in head.metrics["stage_seconds"]

"""Head-only training on cached features (`edged.train.head_fit`): its choices read only the training samples,
the folded head is the fitted one, and a stored fit is what a resumed run gets."""

from __future__ import annotations

import pytest
import torch

from edged.data.preprocess import preprocess_images
from edged.train.evaluate import accuracy
from edged.train.head_fit import FIT_FILE, HeadFitSettings, cross_validated_probe, fit_head_, stratified_folds
from tiny_model import tiny_classifier

CPU = torch.device("cpu")


def _digits(digits_task):
    inputs = preprocess_images(digits_task.x, image_size=16)  # (400, 3, 16, 16)
    return inputs[:320], digits_task.y[:320], inputs[320:], digits_task.y[320:]


def test_the_fit_never_reads_the_validation_split_for_its_choices(digits_task):
    """The same training samples with two different validation splits (the real one, and noise with shuffled
    labels) give the same weight decay and the same head, bit for bit; only the reported accuracy differs."""
    train_x, train_y, val_x, val_y = _digits(digits_task)
    noise = torch.randn_like(val_x)
    shuffled = val_y[torch.randperm(len(val_y), generator=torch.Generator().manual_seed(1))]
    heads, results = [], []
    for inputs, labels in ((val_x, val_y), (noise, shuffled)):
        model = tiny_classifier()
        results.append(fit_head_(model, train_x, train_y, inputs, labels, HeadFitSettings(seed=0, batch_size=64), CPU))
        heads.append({k: v.clone() for k, v in model.head.state_dict().items()})
    assert results[0].history[0]["weight_decay"] == results[1].history[0]["weight_decay"]
    assert results[0].history[0]["holdout_accuracy"] == results[1].history[0]["holdout_accuracy"]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert results[0].best_accuracy != results[1].best_accuracy


def test_the_folded_head_scores_on_the_model_what_the_fit_scored_on_cached_features(digits_task, tmp_path):
    """Standardisation folded into the Linear: the whole model's accuracy is the one reported from the cached
    features, and well above chance; a second call with the checkpoint dir loads the fit without refitting."""
    train_x, train_y, val_x, val_y = _digits(digits_task)
    model, events = tiny_classifier(), []
    settings = HeadFitSettings(seed=0, batch_size=64, checkpoint_dir=tmp_path)
    result = fit_head_(model, train_x, train_y, val_x, val_y, settings, CPU, events.append)
    assert result.best_accuracy == accuracy(model, val_x, val_y, 64, CPU) > 0.3
    assert [e["type"] for e in events][-1] == "epoch" and {e["type"] for e in events} == {"step", "epoch"}
    assert (tmp_path / FIT_FILE).exists()
    resumed, resumed_events = tiny_classifier(), []
    again = fit_head_(resumed, train_x, train_y, val_x, val_y, settings, CPU, resumed_events.append)
    assert resumed_events == [] and again.best_accuracy == result.best_accuracy
    # the replaced head's accuracy (what a head refit reports) comes back with the stored fit
    assert again.history[0]["val_accuracy_head_before"] == result.history[0]["val_accuracy_head_before"]
    assert torch.equal(resumed.head.weight, model.head.weight) and torch.equal(resumed.head.bias, model.head.bias)


def _blobs(samples: int = 96, classes: int = 4, dim: int = 16, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(classes, dim, generator=generator)
    labels = torch.arange(samples) % classes
    return centers[labels] * 3 + spread * torch.randn(samples, dim, generator=generator) * 3, labels


def test_the_cross_validated_probe_matches_sklearn_on_the_same_folds():
    """The learning-rate search's trial probe against an independent one: sklearn's multinomial logistic
    regression (StandardScaler, lbfgs, C = 1 / (2 N decay) for the mean-loss objective, intercept unpenalised)
    fit on the same folds. Overlapping classes, so neither is trivially right."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    features, labels = _blobs(spread=2.0)
    accuracy_, loss = cross_validated_probe(features, labels, 4, decay=1e-3, folds=4)
    hits, reference_loss = 0, 0.0
    for fold in range(4):
        held = stratified_folds(labels, 4) == fold
        scaler = preprocessing.StandardScaler().fit(features[~held].numpy())
        fit_x, held_x = scaler.transform(features[~held].numpy()), scaler.transform(features[held].numpy())
        probe = linear_model.LogisticRegression(C=1 / (2 * int((~held).sum()) * 1e-3), max_iter=1000, tol=1e-8)
        probe.fit(fit_x, labels[~held].numpy())
        hits += int((probe.predict(held_x) == labels[held].numpy()).sum())
        log_p = torch.tensor(probe.predict_log_proba(held_x))
        reference_loss -= float(log_p[torch.arange(int(held.sum())), labels[held]].sum())
    assert 0.4 < hits / len(labels) < 0.95  # the data neither separable nor noise
    assert abs(accuracy_ - hits / len(labels)) <= 2 / len(labels)
    assert loss == pytest.approx(reference_loss / len(labels), rel=0.05)


def test_the_cross_validated_probe_scores_only_held_out_samples():
    """Labels shuffled against the features: a probe scored on the samples it fit would still score well (16
    dims, 24 samples a class); scored on held-out folds it is near chance."""
    features, labels = _blobs(spread=0.3)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    assert cross_validated_probe(features, labels, 4, decay=1e-3)[0] > 0.9
    assert cross_validated_probe(features, shuffled, 4, decay=1e-3)[0] < 0.5


def test_folds_hold_every_class_however_the_samples_are_ordered():
    """Labels ordered with a period equal to the fold count (class = index % 4): interleaved folds would put
    one class in each fold, so no fit part would see it."""
    labels = torch.arange(40) % 4
    part = stratified_folds(labels, 4)
    for fold in range(4):
        assert set(labels[part == fold].tolist()) == {0, 1, 2, 3}
    assert torch.bincount(part).tolist() == [10, 10, 10, 10]

import pytest
from pydantic import ValidationError
import torch
from safetensors.torch import load_file

from tiny_model import tiny_classifier
from edged.pipeline.config import AdaptConfig
from edged.pipeline.outputs import apply_delta_
from edged.pipeline.adapt import adapt
from edged.pipeline.outputs import write_outputs
from edged.data.preprocess import preprocess_images
from edged.data.task import TaskData
from edged.errors import InvalidInput


def _preprocess(task):
    return preprocess_images(task.x, image_size=16)


def _run(task, **options):
    model = tiny_classifier()
    events = []
    # CPU: these tests pin bit-level properties and determinism, which hold on the CPU (GPU paths: tests/jobs, gpu marks)
    options = {"epochs": 4, "batch_size": 16, "budget": 0.01, "lr": 3e-2, "head_lr": 3e-2, "device": "cpu", **options}
    config = AdaptConfig(**options)
    return adapt(model, _preprocess, task, config, on_progress=events.append), events


def test_taskedge_adaptation_end_to_end(digits_task, tmp_path):
    base = {n: p.detach().clone() for n, p in tiny_classifier().named_parameters()}
    result, events = _run(digits_task, method="taskedge")
    m = result.metrics
    assert m["accuracy_after"] > m["accuracy_before"] + 0.3
    assert m["trainable_params"] == round(0.01 * m["backbone_weights"])
    assert m["trainable_fraction"] == pytest.approx(0.01, rel=0.01)
    assert set(m["stage_seconds"]) >= {"calibrate", "score", "mask", "train", "evaluate"}
    assert any(e["type"] == "step" for e in events) and any(e["type"] == "epoch" for e in events)
    # outside the trained entries, the backbone is bit-identical to the base model
    merged = dict(result.model.named_parameters())
    changed = result.adaptation.changed
    for name, old in base.items():
        if name.startswith("head."):
            continue
        keep = torch.ones(old.numel(), dtype=torch.bool)
        if name in changed:
            keep[changed[name]] = False
        assert torch.equal(merged[name].detach().flatten()[keep], old.flatten()[keep])
    # the delta artifact on the base model reproduces the merged model exactly
    paths = write_outputs(result.model, result.adaptation, tmp_path, AdaptConfig(method="taskedge", budget=0.01), "tiny")
    fresh = tiny_classifier()
    apply_delta_(fresh, paths["delta"])
    for name, value in result.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_adaptation_is_deterministic_on_cpu(digits_task):
    a, _ = _run(digits_task, method="random")
    b, _ = _run(digits_task, method="random")
    assert a.metrics["accuracy_after"] == b.metrics["accuracy_after"]
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_bad_inputs_are_named():
    x = torch.rand(6, 1, 8, 8)
    with pytest.raises(InvalidInput, match="at least 2"):
        TaskData("image", x, torch.zeros(6, dtype=torch.int64), ["only"])
    with pytest.raises(InvalidInput, match=r"labels must lie in \[0, 1\]"):
        TaskData("image", x, torch.tensor([0, 1, 2, 0, 1, 0]), ["a", "b"])
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidInput, match="NaN"):
        TaskData("image", x, torch.tensor([0, 1, 0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(ValidationError, match="budget"):
        AdaptConfig(budget=0)
    with pytest.raises(ValidationError, match="budget"):
        AdaptConfig(budget=1.5)


def test_interrupted_adaptation_resumes_from_its_work_directory(digits_task, tmp_path):
    class Interrupt(Exception):
        pass

    def stop_in_second_epoch(event):
        if event["type"] == "step" and event["epoch"] == 1:
            raise Interrupt

    config = AdaptConfig(method="taskedge", epochs=3, batch_size=16, budget=0.01, lr=3e-2, head_lr=3e-2, device="cpu")
    with pytest.raises(Interrupt):
        adapt(tiny_classifier(), _preprocess, digits_task, config, on_progress=stop_in_second_epoch, workdir=tmp_path)
    assert (tmp_path / "calibration.safetensors").exists() and (tmp_path / "mask.safetensors").exists()
    assert (tmp_path / "checkpoint" / "last.safetensors").exists()
    events = []
    resumed = adapt(tiny_classifier(), _preprocess, digits_task, config, on_progress=events.append, workdir=tmp_path)
    stages = [e["stage"] for e in events if e["type"] == "stage" and e["status"] == "started"]
    assert "score" not in stages  # the mask came from disk
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]
    uninterrupted = adapt(tiny_classifier(), _preprocess, digits_task, config)
    assert resumed.metrics["trainable_params"] == uninterrupted.metrics["trainable_params"]
    assert resumed.metrics["accuracy_after"] > resumed.metrics["accuracy_before"] + 0.3


def test_2_4_adaptation_keeps_the_pattern_and_trains_only_kept_positions(digits_task, tmp_path):
    from edged.sparse.nm import check_2_4

    result, events = _run(digits_task, method="taskedge", sparsity="2:4")
    sparsity = result.metrics["sparsity"]
    assert sparsity["pattern_holds"] is True
    weights = dict(result.model.named_parameters())
    pruned = [name for name in weights if name.startswith("backbone.") and name.endswith("weight") and check_2_4(weights[name])]
    assert set(pruned) == {"backbone.3.weight", "backbone.9.weight"}  # the 1x1 conv and the Linear
    # the first conv (3 input channels) and the depthwise conv cannot hold 2:4: they stay dense and are listed
    assert set(sparsity["ineligible_layers"]) >= {"backbone.0.weight", "backbone.6.weight"}
    # every trained entry lies on a kept position
    trained = 0
    for name, indices in result.adaptation.changed.items():
        if name in result.pruning.keep_masks:
            assert bool(result.pruning.keep_masks[name].flatten().cpu()[indices].all()), name
        trained += 0 if indices is None else indices.numel()
    assert trained == result.adaptation.entries
    assert result.metrics["accuracy_after"] > result.metrics["accuracy_before"] + 0.3
    assert "prune" in result.metrics["stage_seconds"]
    # the delta carries the keep-masks (1 bit a weight), the trained entries and the re-estimated BatchNorm
    # statistics: it rebuilds the 2:4 model bit for bit (pruned zeros are +0.0 in both)
    paths = write_outputs(result.model, result.adaptation, tmp_path, AdaptConfig(method="taskedge", sparsity="2:4"),
                          "tiny", keep_masks=result.pruning.keep_masks)
    stored = load_file(str(paths["delta"]))
    assert {key for key in stored if key.endswith("::pattern")} == {f"{n}::pattern" for n in result.pruning.keep_masks}
    fresh = tiny_classifier()
    apply_delta_(fresh, paths["delta"])
    for name, value in result.model.state_dict().items():
        assert torch.equal(_bits(fresh.state_dict()[name]), _bits(value)), name


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as integers, so -0.0 and +0.0 differ."""
    return tensor.detach().contiguous().view(torch.uint8) if tensor.is_floating_point() else tensor


def test_2_4_metrics_show_the_dense_reference_and_the_unrecovered_accuracy(digits_task, tmp_path):
    config = AdaptConfig(method="taskedge", sparsity="2:4", epochs=4, batch_size=16, budget=0.01, lr=3e-2,
                         head_lr=3e-2, device="cpu")
    events = []
    result = adapt(tiny_classifier(), _preprocess, digits_task, config, on_progress=events.append, workdir=tmp_path)
    sparsity = result.metrics["sparsity"]
    dense = adapt(tiny_classifier(), _preprocess, digits_task, config.model_copy(update={"sparsity": "none"}))
    assert sparsity["accuracy_dense_adapted"] == dense.metrics["accuracy_after"]  # the same run, on an unpruned copy
    assert sparsity["accuracy_2_4_adapted"] == result.metrics["accuracy_after"]
    assert sparsity["accuracy_pruned_no_recovery"] < sparsity["accuracy_2_4_adapted"]
    assert {"dense_reference", "evaluate_pruned"} <= set(result.metrics["stage_seconds"])
    # its events are labelled, and its stages stay inside the job's "dense_reference" stage
    assert any(e["type"] == "dense_reference_epoch" for e in events)
    assert [e["stage"] for e in events if e["type"] == "stage"].count("train") == 2  # started + finished, once
    # its results are kept for a resumed job: the accuracy, and the teacher's logits on the training samples
    teacher = load_file(str(tmp_path / "dense_reference" / "result.safetensors"))["logits"]
    assert teacher.shape == (result.metrics["train_samples"], len(digits_task.classes))
    resumed = adapt(tiny_classifier(), _preprocess, digits_task, config, workdir=tmp_path)
    assert resumed.metrics["sparsity"]["accuracy_dense_adapted"] == sparsity["accuracy_dense_adapted"]
    assert "dense_reference" in resumed.metrics["stage_seconds"]


def test_the_dense_reference_changes_the_2_4_run_only_through_distillation(digits_task):
    config = AdaptConfig(method="taskedge", sparsity="2:4", epochs=2, batch_size=16, budget=0.01, lr=3e-2,
                         head_lr=3e-2, device="cpu", distill_weight=0.0)
    with_reference = adapt(tiny_classifier(), _preprocess, digits_task, config)
    without = adapt(tiny_classifier(), _preprocess, digits_task, config.model_copy(update={"dense_reference": False}))
    assert without.metrics["sparsity"]["accuracy_dense_adapted"] is None
    assert with_reference.metrics["sparsity"]["accuracy_dense_adapted"] is not None
    for (name, a), b in zip(with_reference.model.state_dict().items(), without.model.state_dict().values()):
        assert torch.equal(a, b), name  # own RNG stream: the 2:4 run is bit for bit the same
    distilled = adapt(tiny_classifier(), _preprocess, digits_task, config.model_copy(update={"distill_weight": 0.5}))
    assert not torch.equal(distilled.model.head.weight, without.model.head.weight)


def test_2_4_with_a_dense_update_method_is_refused(digits_task):
    with pytest.raises(ValidationError, match="cannot be kept by method 'lora'"):
        _run(digits_task, method="lora", sparsity="2:4")

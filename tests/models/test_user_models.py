"""User models: `module:factory=weights` with safetensors and torch state dicts, and every way it can go wrong."""

import pytest
import torch
from safetensors.torch import save_file

from edged.data.task import TaskData
from edged.errors import InvalidInput, NotFound
from edged.models import Classifier, load_model
from edged.models.sources import ModelSources

import tiny_model  # the user factories, loaded below by spec (`tiny_model:small_cnn`) as an operator's module is


@pytest.fixture
def cnn_weights():
    torch.manual_seed(1)
    return {k: v.clone() for k, v in tiny_model.small_cnn().state_dict().items()}


def test_factory_with_safetensors_loads_exact_weights_and_probes_feature_dim(tmp_path, cnn_weights):
    path = tmp_path / "cnn.safetensors"
    save_file(cnn_weights, str(path))
    loaded = load_model(f"tiny_model:small_cnn={path}", num_classes=3, image_size=32)
    assert isinstance(loaded.model, Classifier) and loaded.model.kind == "image"
    assert loaded.model.head.in_features == 32
    for name, tensor in loaded.model.backbone.state_dict().items():
        assert torch.equal(tensor, cnn_weights[name]), name
    images = torch.randint(0, 256, (4, 1, 20, 20), dtype=torch.uint8)
    task = TaskData("image", images, torch.tensor([0, 1, 2, 0]), ["a", "b", "c"])
    inputs = loaded.preprocess(task)
    assert inputs.shape == (4, 3, 32, 32)
    assert loaded.model(inputs).shape == (4, 3)
    assert loaded.info.options == {"image_size": 32}
    assert loaded.info.params == sum(p.numel() for p in loaded.model.backbone.parameters())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_factory_with_torch_state_dict(tmp_path, cnn_weights, zip_format):
    path = tmp_path / "cnn.pt"
    torch.save(cnn_weights, path, _use_new_zipfile_serialization=zip_format)
    loaded = load_model(f"tiny_model:small_cnn={path}", num_classes=2)
    first_conv = loaded.model.backbone[0].weight
    assert torch.equal(first_conv, cnn_weights["0.weight"])


def test_factory_without_weights_uses_its_own_and_declared_feature_dim():
    loaded = load_model("tiny_model:declared_mlp", num_classes=4, kind="tabular")
    assert loaded.model.head.in_features == 24
    task = TaskData("tabular", torch.randn(5, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0]), list("abcd"))
    inputs = loaded.preprocess(task)
    assert inputs.dtype == torch.float32 and loaded.model(inputs).shape == (5, 4)


def test_tabular_feature_dim_is_probed_from_first_linear():
    loaded = load_model("tiny_model:tabular_mlp", num_classes=2, kind="tabular")
    assert loaded.model.head.in_features == 16
    assert loaded.info.options == {}


@pytest.mark.parametrize(
    ("spec", "options", "error", "words"),
    [
        ("no_such_module_xyz:make", {}, NotFound, "cannot import module"),
        ("tiny_model:missing", {}, NotFound, "no callable"),
        ("tiny_model:not_a_module", {}, InvalidInput, "not a torch.nn.Module"),
        ("tiny_model:broken", {}, InvalidInput, "factory exploded"),
        ("tiny_model:no_layers", {}, InvalidInput, "no Linear or Conv2d"),
        ("tiny_model:wrong_output", {}, InvalidInput, "not features shaped (N, D)"),
        ("tiny_model:small_cnn", {"kind": "text"}, InvalidInput, "kind must be one of"),
        ("tiny_model:small_cnn", {"max_length": 8}, InvalidInput, "does not take option"),
        ("tiny_model:small_cnn", {"image_size": 4}, InvalidInput, "image_size"),
        ("tiny_model:small_cnn=/nonexistent/w.safetensors", {}, NotFound, "not found"),
    ],
)
def test_bad_factory_specs_raise_clear_errors(spec, options, error, words):
    with pytest.raises(error) as caught:
        load_model(spec, num_classes=2, **options)
    assert words in caught.value.message


def test_weights_that_do_not_match_are_rejected_naming_the_keys(tmp_path, cnn_weights):
    renamed = {f"backbone.{k}": v for k, v in cnn_weights.items()}
    path = tmp_path / "renamed.safetensors"
    save_file(renamed, str(path))
    with pytest.raises(InvalidInput) as caught:
        load_model(f"tiny_model:small_cnn={path}", num_classes=2)
    assert "0.weight" in caught.value.detail["missing"]

    reshaped = dict(cnn_weights, **{"5.weight": torch.zeros(32, 8)})
    save_file(reshaped, str(path))
    with pytest.raises(InvalidInput, match="keys of another shape: 1") as caught:
        load_model(f"tiny_model:small_cnn={path}", num_classes=2)
    assert caught.value.detail == {"shape_mismatches": ["5.weight: file (32, 8), backbone (32, 16)"]}


def test_a_checkpoint_keeping_its_classifier_loads_with_drop_weight_keys(tmp_path, cnn_weights):
    """As EfficientNet checkpoints ship: the backbone's keys plus an ImageNet classifier `_fc.*`."""
    path = tmp_path / "with_fc.pt"
    torch.save({**cnn_weights, "_fc.weight": torch.zeros(1000, 32), "_fc.bias": torch.zeros(1000)}, path)
    with pytest.raises(InvalidInput) as caught:
        load_model(f"tiny_model:small_cnn={path}", num_classes=2)
    assert "set drop_weight_keys: ['_fc.']" in caught.value.message
    assert caught.value.detail == {"unexpected": ["_fc.bias", "_fc.weight"]}

    loaded = load_model(f"tiny_model:small_cnn={path}", num_classes=2, drop_weight_keys=["_fc."])
    backbone = loaded.model.backbone.state_dict()
    assert all(torch.equal(backbone[key], value) for key, value in cnn_weights.items())


@pytest.mark.parametrize("prefixes, words", [
    (["_fc.", "head."], "'head.' matches no key of with_fc.pt"),
    (["_fc.", "1."], "'1.' would drop 5 key(s) the backbone needs (1.bias, 1.num_batches_tracked, 1.running_mean"),
    ("_fc.", "must be a list of key prefixes"),
])
def test_drop_weight_keys_that_drop_nothing_or_needed_keys_are_refused(tmp_path, cnn_weights, prefixes, words):
    path = tmp_path / "with_fc.pt"
    torch.save({**cnn_weights, "_fc.weight": torch.zeros(1000, 32)}, path)
    with pytest.raises(InvalidInput) as caught:
        load_model(f"tiny_model:small_cnn={path}", num_classes=2, drop_weight_keys=prefixes)
    assert words in caught.value.message


def test_weights_files_of_the_wrong_kind_are_rejected(tmp_path):
    text_file = tmp_path / "weights.bin"
    text_file.write_text("not weights")
    with pytest.raises(InvalidInput, match="unsupported weights file"):
        load_model(f"tiny_model:small_cnn={text_file}", num_classes=2)
    pickled = tmp_path / "object.pt"
    torch.save({"model": tiny_model.small_cnn()}, pickled)  # a whole module: refused by weights_only
    with pytest.raises(InvalidInput, match="cannot read"):
        load_model(f"tiny_model:small_cnn={pickled}", num_classes=2)


def test_with_a_jobs_sources_only_allowed_factories_and_weights_inside_the_models_dir_load(tmp_path, cnn_weights):
    """What the worker enforces (a job queued before the operator narrowed the allow-list still cannot run)."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    save_file(cnn_weights, str(models_dir / "cnn.safetensors"))
    save_file(cnn_weights, str(tmp_path / "outside.safetensors"))
    sources = ModelSources(("tiny_model:small_cnn",), models_dir)
    loaded = load_model("tiny_model:small_cnn=cnn.safetensors", num_classes=2, sources=sources)
    assert torch.equal(loaded.model.backbone[0].weight, cnn_weights["0.weight"])
    with pytest.raises(InvalidInput, match="EDGED_MODEL_FACTORIES"):
        load_model("tiny_model:tabular_mlp", num_classes=2, kind="tabular", sources=sources)
    with pytest.raises(InvalidInput, match="outside the models directory"):
        load_model(f"tiny_model:small_cnn={tmp_path / 'outside.safetensors'}", num_classes=2, sources=sources)
    with pytest.raises(InvalidInput, match="outside the models directory"):
        load_model(str(tmp_path), num_classes=2, sources=sources)  # a directory outside, not a transformers dir


@pytest.mark.parametrize(("entry", "allowed", "refused"), [
    ("pkg.mod:make", ["pkg.mod:make"], ["pkg.mod:other", "pkg.modx:make", "pkg:make"]),
    ("pkg", ["pkg:make", "pkg.sub:any", "pkg.sub.deep:f"], ["pkgx:make", "other.pkg:make"]),
])
def test_allow_list_entries_are_exact_specs_or_module_prefixes(tmp_path, entry, allowed, refused):
    sources = ModelSources((entry,), tmp_path)
    assert all(sources.allows_factory(*spec.split(":")) for spec in allowed)
    assert not any(sources.allows_factory(*spec.split(":")) for spec in refused)

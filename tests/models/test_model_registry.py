"""The registry itself: listing, loading every registered model, options, seeds and bad input."""

import pytest
import torch
from torch import nn

from edged.data.task import TaskData
from edged.errors import InvalidInput, NotFound, Unavailable
from edged.models import Classifier, ModelInfo, list_models, load_model
from edged.models import registry
from edged.models.registry import Backbone, Entry
from edged.sparse.layers import weight_layers

REGISTERED = registry.registered_names()  # parametrises the per-model tests; the expectations below are facts
BUILT_INS = ["minilm-l6", "mobilenet_v2"]  # the models edged ships, sorted by name
# backbone parameters, heads excluded: torchvision's MobileNetV2 (3,504,872) without its ImageNet classifier
# Linear(1280, 1000) (1,281,000); BERT-style MiniLM, 6 layers of 384 (1,774,464 each), embeddings for
# 30,522 tokens and 512 positions (11,918,592), pooler excluded
BACKBONE_PARAMS = {"mobilenet_v2": 2_223_872, "minilm-l6": 22_565_376}


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenet_v2", num_classes=10, seed=0)


def tiny_task(kind: str) -> TaskData:
    labels = torch.tensor([0, 1, 0, 1])
    if kind == "image":
        return TaskData("image", torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), labels, ["a", "b"])
    texts = ["a short one", "a somewhat longer sentence about football", "markets fell", "new phone released"]
    return TaskData("text", texts, labels, ["a", "b"])


def test_builtins_are_registered_and_listed():
    infos = {info.name: info for info in list_models()}
    assert set(BUILT_INS) <= set(infos)
    assert {name: infos[name].params for name in BUILT_INS} == BACKBONE_PARAMS
    assert infos["mobilenet_v2"].kind == "image" and infos["mobilenet_v2"].options == {"image_size": 64}
    assert infos["minilm-l6"].kind == "text" and infos["minilm-l6"].options == {"max_length": 128, "token_keep": 1.0,
                                                                                "token_layer": 1}
    assert all(isinstance(info, ModelInfo) and info.available and info.reason is None for info in infos.values())


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_model_loads_and_classifies(name, request):
    info = next(i for i in list_models() if i.name == name)
    loaded = load_model(name, num_classes=2, seed=0)
    model = loaded.model
    assert isinstance(model, Classifier) and model.kind == info.kind and not model.training
    assert info.params == sum(p.numel() for p in model.backbone.parameters())
    assert all(n.startswith(("backbone.", "head.")) for n, _ in model.named_parameters())
    assert weight_layers(model.backbone, prefix="backbone.")  # something to adapt
    inputs = loaded.preprocess(tiny_task(info.kind))
    with torch.no_grad():
        logits = model(inputs)
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()


def test_head_is_deterministic_for_a_seed(mobilenet):
    again = load_model("mobilenet_v2", num_classes=10, seed=0).model.head
    other = load_model("mobilenet_v2", num_classes=10, seed=1).model.head
    assert torch.equal(again.weight, mobilenet.model.head.weight) and torch.equal(again.bias, mobilenet.model.head.bias)
    assert not torch.equal(other.weight, mobilenet.model.head.weight)
    bound = 1 / 1280**0.5  # nn.Linear's default range
    assert mobilenet.model.head.weight.abs().max() <= bound


def test_head_follows_the_global_seed_without_an_explicit_one():
    heads = []
    for _ in range(2):
        torch.manual_seed(123)
        heads.append(load_model("mobilenet_v2", num_classes=3).model.head.weight)
    assert torch.equal(heads[0], heads[1])


def test_image_size_option_changes_preprocessing(mobilenet):
    task = tiny_task("image")
    assert mobilenet.preprocess(task).shape == (4, 3, 64, 64)
    assert load_model("mobilenet_v2", num_classes=2, image_size=96).preprocess(task).shape == (4, 3, 96, 96)


@pytest.mark.parametrize(
    ("spec", "kwargs", "error", "words"),
    [
        ("resnet_9000", {}, NotFound, "no model 'resnet_9000'"),
        ("./no/such/dir", {}, NotFound, "no model"),
        ("mobilenet_v2", {"num_classes": 1}, InvalidInput, "num_classes must be an integer >= 2"),
        ("mobilenet_v2", {"num_classes": True}, InvalidInput, "num_classes"),
        ("mobilenet_v2", {"max_length": 64}, InvalidInput, "does not take option(s) ['max_length']"),
        ("mobilenet_v2", {"image_size": 8}, InvalidInput, "image_size must be an integer in [16, 1024]"),
        ("mobilenet_v2", {"image_size": "64"}, InvalidInput, "must be an integer"),
        ("mobilenet_v2", {"device": "tpu"}, InvalidInput, "device"),
    ],
)
def test_bad_load_requests_raise_clear_errors(spec, kwargs, error, words):
    kwargs = {"num_classes": 2, **kwargs}
    with pytest.raises(error) as caught:
        load_model(spec, **kwargs)
    assert words in caught.value.message


def test_unknown_name_lists_the_registered_models():
    with pytest.raises(NotFound) as caught:
        load_model("resnet_9000", num_classes=2)
    assert caught.value.detail["registered"] == BUILT_INS


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
def test_cuda_without_a_gpu_is_unavailable():
    with pytest.raises(Unavailable, match="CUDA is not available"):
        load_model("mobilenet_v2", num_classes=2, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loads_and_runs_on_cuda():
    loaded = load_model("mobilenet_v2", num_classes=2, device="cuda")
    logits = loaded.model(loaded.preprocess(tiny_task("image")).cuda())
    assert logits.device.type == "cuda" and logits.shape == (4, 2)


def test_dataset_of_the_wrong_kind_is_rejected(mobilenet):
    with pytest.raises(InvalidInput, match="takes image data, the dataset is text"):
        mobilenet.preprocess(tiny_task("text"))


def test_model_whose_package_is_missing_is_listed_unavailable(monkeypatch):
    def build(options):
        return Backbone(nn.Linear(2, 2), 2, lambda task: task.x)

    requires = {"edged_no_such_pkg": "edged-no-such-pkg"}
    entry = Entry("needs-missing", "tabular", "test entry", "features", {}, requires, lambda: 6, build)
    monkeypatch.setitem(registry._ENTRIES, entry.name, entry)
    info = next(i for i in list_models() if i.name == "needs-missing")
    assert not info.available and info.params is None
    assert "pip install edged-no-such-pkg" in info.reason
    with pytest.raises(Unavailable, match="pip install edged-no-such-pkg"):
        load_model("needs-missing", num_classes=2)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(
            "mobilenet_v2", kind="image", description="", input="", options={}, requires={}, count_params=lambda: 0
        )(lambda options: None)

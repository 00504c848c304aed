import pytest
import torch
from torch import nn

from edged.sparse.layers import weight_layers
from edged.sparse.nm import prune_2_4_


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


@pytest.fixture
def pruned_mlp():
    torch.manual_seed(0)
    model = TinyMLP()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand_like(p) + 0.1) * torch.where(torch.rand_like(p) < 0.5, -1.0, 1.0))
    layers = weight_layers(model)
    report = prune_2_4_(model, {n: l.weight.abs() for n, l in layers.items()}, layers)
    return model.eval(), report, torch.randn(4, 8, 32)

"""A ViT-B/16-shaped encoder from plain torch modules (no timm, no torchvision), for benchmarks.

Every matmul is an nn.Linear, so pruning and the compile backends see all of them: qkv 768->2304,
attention projection 768->768, MLP 768->3072 and 3072->768, on 197 tokens (196 patches + class)
per 224x224 image. The patch embedding is a Linear on flattened 16x16x3 patches (768->768), the
same arithmetic as ViT's stride-16 conv. Weights are random: this measures speed, not accuracy;
`prune_by_magnitude_` gives them the 2:4 pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edged.sparse.layers import weight_layers
from edged.sparse.nm import nm_ineligible_reason, nm_keep_mask


@dataclass(frozen=True)
class VitShape:
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp: int = 3072
    image: int = 224
    patch: int = 16
    classes: int = 1000

    @property
    def tokens(self) -> int:
        return (self.image // self.patch) ** 2 + 1  # patches + class token


VIT_B16 = VitShape()


class Block(nn.Module):
    def __init__(self, s: VitShape) -> None:
        super().__init__()
        self.heads = s.heads
        self.norm1 = nn.LayerNorm(s.dim)
        self.qkv = nn.Linear(s.dim, 3 * s.dim)
        self.proj = nn.Linear(s.dim, s.dim)
        self.norm2 = nn.LayerNorm(s.dim)
        self.fc1 = nn.Linear(s.dim, s.mlp)
        self.fc2 = nn.Linear(s.mlp, s.dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D)
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D/H)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(attn)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VitEncoder(nn.Module):
    """images (B, 3, H, W) -> logits (B, classes)."""

    def __init__(self, s: VitShape = VIT_B16) -> None:
        super().__init__()
        self.patch = s.patch
        self.embed = nn.Linear(3 * s.patch * s.patch, s.dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, s.dim))
        self.pos = nn.Parameter(torch.randn(1, s.tokens, s.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(s) for _ in range(s.depth))
        self.norm = nn.LayerNorm(s.dim)
        self.head: nn.Module = nn.Linear(s.dim, s.classes)

    def forward(self, images: Tensor) -> Tensor:
        b, c, h, w = images.shape
        p = self.patch
        patches = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        x = self.embed(patches.reshape(b, (h // p) * (w // p), c * p * p))  # (B, N, D)
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def tiny_vit_shape() -> VitShape:
    """A few-thousand-parameter encoder with every Linear size a multiple of 16 (tests, CPU runs)."""
    return VitShape(dim=32, depth=1, heads=2, mlp=64, image=16, patch=4, classes=16)


@torch.no_grad()
def prune_by_magnitude_(model: nn.Module) -> int:
    """2:4-prune every eligible Linear/Conv2d by |W| (speed does not depend on which 2 are kept)."""
    count = 0
    for layer in weight_layers(model).values():
        if nm_ineligible_reason(layer) is None:
            weight = layer.get_parameter("weight")
            weight.mul_(nm_keep_mask(weight.abs()).to(weight.dtype))
            count += 1
    return count

"""A tiny user backbone for the job tests, loaded by the worker process through the spec
`edged_jobs_test_model:small_cnn` (its directory is put on PYTHONPATH by the tests)."""

import os

import torch
from torch import nn

CALLS_FILE_VARIABLE = "TEST_FACTORY_CALLS_FILE"  # where counted_cnn appends a line per call (the daemon is another process)


def small_cnn() -> nn.Module:
    """(N, 3, 16, 16) -> (N, 64): convs and a Linear with sizes in multiples of 16 (so 2:4 applies)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    )


def counted_cnn() -> nn.Module:
    """small_cnn, each call appending the calling process's pid to the file named by CALLS_FILE_VARIABLE, so a
    test can count how often the daemon built it."""
    calls_file = os.environ.get(CALLS_FILE_VARIABLE)
    if calls_file:
        with open(calls_file, "a") as calls:
            calls.write(f"{os.getpid()}\n")
    return small_cnn()


def broken() -> nn.Module:
    """A factory that fails when it is built: POST /v1/jobs builds it, so this is a 422 at submit."""
    raise RuntimeError("factory exploded")


def same_shape_mlp() -> nn.Module:
    """(N, 3, 16, 16) -> (N, 192): six Linear(192, 192), so every trainable layer has ONE shape, and more
    than nine of them, so their names in sorted order (backbone.10, backbone.12, backbone.2, ...) differ from
    the model's order. Values restored into the wrong layer would fit without an error: resume tests use it
    to catch exactly that."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.AvgPool2d(2), nn.Flatten()]  # (N, 3, 8, 8) -> (N, 192)
    for _ in range(6):
        layers += [nn.Linear(192, 192), nn.ReLU()]
    return nn.Sequential(*layers)


def wine_mlp() -> nn.Module:
    """(N, 13) -> (N, 64): a tabular backbone for the 13 chemical measurements of mlxtend's wine data. The
    BatchNorm puts features of very different scales (proline ~1000, hue ~1) on one footing."""
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(13), nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())


def slow_bn_cnn() -> nn.Module:
    """small_cnn with BatchNorm momentum 0.01: a few hundred steps pass before its running statistics forget
    their initial mean 0 / variance 1, so a short full fine-tuning leaves them far from the task data's."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16, momentum=0.01), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32, momentum=0.01), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    )


class Attention(nn.Module):
    """Multi-head self-attention as timm writes it: (N, T, D) -> (N, T, D)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """A pre-norm transformer block with `attn` and an `mlp` (Linear, GELU, Linear), as timm's ViT has."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BlockVit(nn.Module):
    """(N, 3, 16, 16) -> (N, 32): a ViT with one token per pixel (256 tokens) and narrow layers, so its saved
    activations are large next to its compute: what the recomputation policies trade (training memory tests)."""

    def __init__(self, depth: int = 2, dim: int = 32, heads: int = 2, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.pos = nn.Parameter(torch.randn(1, 256, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images.flatten(2).transpose(1, 2)) + self.pos  # (N, 256, D)
        return self.norm(self.blocks(x)).mean(1)


def block_vit() -> nn.Module:
    torch.manual_seed(0)
    return BlockVit(depth=4)

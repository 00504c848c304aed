"""Recomputation policies: what training keeps for the backward pass and what it recomputes there.

From cheapest to most memory-saving, each adding to the one before:
- `none`: autograd keeps what every op saves.
- `compute_dtype`: under autocast, the float32 inputs normalization layers save (a ViT's residual stream, which
  autocast keeps in float32 for LayerNorm) are kept in the autocast dtype (bf16/fp16) and cast back when
  backward reads them. Without autocast there is nothing to pack.
- `recompute_mlp`: each block's pointwise part (a transformer MLP, a conv block's 1x1 expansion) runs under
  non-reentrant `torch.utils.checkpoint`: only its input is kept, its activation inputs are recomputed.
- `recompute_attn`: the attention modules too (q/k/v, softmax statistics, output recomputed).
- `checkpoint_blocks`: whole blocks, the last resort (the whole forward runs twice).
- `checkpoint_blocks:K`: the first K blocks only (the rest as under `compute_dtype`), between the two: each block
  checkpointed saves about one block's activations for one block's forward again, so the memory planner can stop
  at the fewest blocks that fit a budget instead of paying for all of them.

`training_policy(model, policy, dtype)` applies one for the duration of a `with` block and removes it after.
Parts are found by structure, not by one model's names (`find_blocks`, `pointwise_parts`, `attention_parts`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

POLICIES = ("none", "compute_dtype", "recompute_mlp", "recompute_attn", "checkpoint_blocks")
_ACTIVATIONS = (nn.GELU, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Mish, nn.Tanh)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


PARTIAL = "checkpoint_blocks:"  # + K: the first K blocks checkpointed


def check_policy(policy: str) -> str:
    count = policy.removeprefix(PARTIAL)
    if policy not in POLICIES and not (policy.startswith(PARTIAL) and count.isdigit() and int(count) > 0):
        raise ValueError(f"unknown recomputation policy {policy!r}; accepted: {', '.join(POLICIES)}, or "
                         f"{PARTIAL}K for the first K blocks (K >= 1)")
    return policy


def partial_policy(count: int) -> str:
    return f"{PARTIAL}{count}"


def _blocks_checkpointed(policy: str) -> Optional[int]:
    """K of `checkpoint_blocks:K`; None for every other policy (`checkpoint_blocks` itself: all blocks)."""
    return int(policy.removeprefix(PARTIAL)) if policy.startswith(PARTIAL) else None


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: the children of the Sequential/ModuleList with the most children that are
    themselves made of several layers (timm's `blocks`, a transformers encoder's `layer`, edged's ViT `blocks`,
    MobileNetV2's `features`). A flat Sequential of single layers has none: checkpointing one layer alone
    keeps its input, which is what the layer saves anyway."""
    best: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            blocks = [child for child in module.children() if _layer_count(child) >= 2]
            if len(blocks) > len(best):
                best = blocks
    return best


def _layer_count(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if next(m.parameters(recurse=False), None) is not None)


def _is_activation(module: nn.Module) -> bool:
    """torch's activation modules, and other libraries' by name (transformers' `GELUActivation`)."""
    return isinstance(module, _ACTIVATIONS) or type(module).__name__.endswith("Activation")


def _is_attention(module: nn.Module) -> bool:
    return "attention" in type(module).__name__.lower() or isinstance(module, nn.MultiheadAttention)


def _is_pointwise(module: nn.Module) -> bool:
    """An activation between Linear or 1x1 conv layers only, no attention: an MLP or a conv expansion."""
    inner = list(module.modules())
    weighted = [m for m in inner if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    return (any(_is_activation(m) for m in inner) and bool(weighted) and not any(_is_attention(m) for m in inner)
            and all(isinstance(m, nn.Linear) or all(k == 1 for k in m.kernel_size) for m in weighted))


def _outermost(block: nn.Module, matches: Callable[[nn.Module], bool]) -> list[nn.Module]:
    """The block's descendants (not the block itself) that match, without those inside a match."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if matches(child):
                found.append(child)
            else:
                visit(child)

    visit(block)
    return found


def pointwise_parts(model: nn.Module) -> list[nn.Module]:
    return [part for block in find_blocks(model) for part in _outermost(block, _is_pointwise)]


def attention_parts(model: nn.Module) -> list[nn.Module]:
    return [part for block in find_blocks(model) for part in _outermost(block, _is_attention)]


def checkpointed_parts(model: nn.Module, policy: str) -> list[nn.Module]:
    """The modules `policy` runs under checkpoint (none for the first two policies)."""
    if policy == "checkpoint_blocks":
        return find_blocks(model)
    if (count := _blocks_checkpointed(policy)) is not None:
        return find_blocks(model)[:count]
    parts = pointwise_parts(model) if policy in ("recompute_mlp", "recompute_attn") else []
    return parts + attention_parts(model) if policy == "recompute_attn" else parts


def changes_anything(model: nn.Module, policy: str, dtype: Optional[torch.dtype]) -> bool:
    """Whether `policy` differs from the one before it on this model (a probe of one that does not is wasted)."""
    if policy == "compute_dtype":
        return dtype is not None
    if policy == "recompute_attn":
        return bool(attention_parts(model))
    if (count := _blocks_checkpointed(policy)) is not None:
        return count < len(find_blocks(model))  # K of all the blocks is `checkpoint_blocks`
    return policy == "none" or bool(checkpointed_parts(model, policy))


@contextlib.contextmanager
def training_policy(model: nn.Module, policy: str, dtype: Optional[torch.dtype]) -> Iterator[None]:
    """Apply `policy` to `model` inside the block (`dtype`: the autocast dtype, None without autocast)."""
    check_policy(policy)
    parts = checkpointed_parts(model, policy)
    own_forwards = [part.__dict__.get("forward") for part in parts]  # an instance's own forward, put back after
    for part in parts:
        part.forward = _checkpointed(part)  # type: ignore[method-assign]
    try:
        packing = policy != "none" and dtype is not None
        with NormInputsInDtype(model, dtype) if packing else contextlib.nullcontext():  # type: ignore[arg-type]
            yield
    finally:
        for part, own in zip(parts, own_forwards):
            if own is None:
                del part.forward
            else:
                part.forward = own


def _checkpointed(part: nn.Module) -> Callable[..., Any]:
    """`part`'s forward under non-reentrant checkpoint while gradients are recorded. The recomputation in
    backward leaves BatchNorm running statistics alone (training-mode BatchNorm would update them twice)."""
    forward = part.forward
    has_dropout = _has_dropout(part)

    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        calls = [0]

        def once_then_recompute(*a: Any, **k: Any) -> Any:
            calls[0] += 1
            with contextlib.nullcontext() if calls[0] == 1 else _frozen_running_stats(part):
                return forward(*a, **k)

        return checkpoint(once_then_recompute, *args, use_reentrant=False,
                          preserve_rng_state=has_dropout or not _capturing_cuda_graph(), **kwargs)

    return run


def _has_dropout(module: nn.Module) -> bool:
    """Whether a dropout layer inside `module` zeroes anything (p > 0)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def _capturing_cuda_graph() -> bool:
    """Whether a CUDA graph is being captured now. The recomputation replays the forward's random numbers by
    saving and restoring the RNG state, which torch refuses during capture in older versions (pytorch#83148,
    #162504): a captured step (`edged bench train-step --graph`) skips it for parts without a dropout layer;
    eager training always keeps it, so any random draw (stochastic depth, a functional dropout) is replayed."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


@contextlib.contextmanager
def _frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers in training mode normalise by the batch as before but leave running statistics as they
    were: momentum 0 keeps the running mean and variance, and the batch counter is put back."""
    norms = [m for m in module.modules() if isinstance(m, _BATCHNORMS) and m.training and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(count)


class NormInputsInDtype:
    """Inside the `with` block, the float32 inputs that normalization layers save for backward (the residual
    stream LayerNorm reads, which autocast keeps in float32: (B, T, D) per norm) are kept in `dtype` and cast back
    to float32 when backward reads them. Only those: per-row statistics (LayerNorm's mean and 1/std, attention's
    log-sum-exp) and parameters stay as they are, since their rounding would scale whole rows.

    Norm inputs are recognised by storage, recorded by forward pre-hooks on the norm layers and forgotten at each
    forward of the model (so a later tensor at a freed address is not mistaken for one)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        self.model, self.dtype = model, dtype
        self.norm_inputs: set[int] = set()
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.saved_hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def __enter__(self) -> NormInputsInDtype:
        self.handles = [m.register_forward_pre_hook(self._remember) for m in self.model.modules() if _is_norm(m)]
        self.handles.append(self.model.register_forward_pre_hook(lambda *_: self.norm_inputs.clear()))
        self.saved_hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.saved_hooks.__exit__(*exc)
        for handle in self.handles:
            handle.remove()
        self.norm_inputs.clear()

    def _remember(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor) and args[0].dtype == torch.float32:
            self.norm_inputs.add(args[0].untyped_storage().data_ptr())

    def pack(self, t: Tensor) -> Any:
        if t.dtype == torch.float32 and t.untyped_storage().data_ptr() in self.norm_inputs:
            return (t.detach().to(self.dtype),)  # a tuple marks a packed tensor
        return t

    def unpack(self, saved: Any) -> Tensor:
        return saved[0].to(torch.float32) if isinstance(saved, tuple) else saved


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith("RMSNorm")

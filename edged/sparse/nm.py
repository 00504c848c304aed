"""N:M structured pruning (2:4 by default) driven by an importance score, and checks of the pattern.

Layout (what sparse tensor cores and TensorRT expect):
- Linear weight (out, in): in each row, every group of m consecutive input weights keeps n.
- Conv2d weight (out, in, kh, kw): for each output channel and each kernel position (kh, kw), every
  group of m consecutive input channels keeps n (TensorRT's rule for sparse convolution).

Eligibility (a layer that fails stays dense and is reported with the reason):
- groups == 1 for Conv2d (a grouped/depthwise conv has too few input channels per group to use
  sparse tensor cores; TensorRT does not pick sparse tactics for it);
- in-features / in-channels % m == 0 (groups must not straddle rows).
Backend-specific size rules (e.g. cuSPARSELt's multiples of 16) live in the backends, which keep
such layers dense at compile time and say so in their report; the pruned pattern itself is valid
for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from edged.errors import InvalidInput
from edged.sparse.layers import WeightLayer

N_KEEP = 2
M_GROUP = 4


@dataclass
class PruneReport:
    """What `prune_2_4_` did: the keep-mask of every pruned layer and why the others stayed dense."""

    n: int
    m: int
    keep_masks: dict[str, Tensor] = field(default_factory=dict)  # name -> bool, shaped like weight
    ineligible: dict[str, str] = field(default_factory=dict)  # name -> reason it stayed dense
    shared: bool = False  # the keep-masks are the base's shared pattern, not this task's own choice
    pattern_id: str | None = None  # sha256 of the packed keep-masks (edged.sparse.shared_pattern)

    @property
    def pruned(self) -> list[str]:
        return list(self.keep_masks)

    def summary(self) -> dict:
        """JSON-friendly summary for job metrics and logs."""
        kept = sum(int(mask.sum()) for mask in self.keep_masks.values())
        total = sum(mask.numel() for mask in self.keep_masks.values())
        return {
            "pattern": f"{self.n}:{self.m}",
            "pruned_layers": self.pruned,
            "ineligible_layers": dict(self.ineligible),
            "kept_fraction_in_pruned_layers": kept / total if total else None,
            "pattern_shared": self.shared,
            "pattern_id": self.pattern_id,
        }


def _check_nm(n: int, m: int) -> None:
    if not (0 < n < m):
        raise InvalidInput(f"invalid N:M pattern {n}:{m}", detail={"accepted": "0 < n < m, e.g. 2:4"})


def _groups_view(tensor: Tensor, m: int) -> Tensor:
    """(rows, m) view of `tensor` with one row per group of m consecutive input weights.

    Linear (out, in) -> (out * in/m, m); Conv2d (out, in, kh, kw) -> (out * kh * kw * in/m, m),
    grouping along input channels at each kernel position.
    """
    if tensor.dim() == 2:
        return tensor.reshape(-1, m)
    if tensor.dim() == 4:
        return tensor.permute(0, 2, 3, 1).reshape(-1, m)  # (out, kh, kw, in) -> (groups, m)
    raise InvalidInput(
        f"cannot apply N:M to a tensor of shape {tuple(tensor.shape)}",
        detail={"accepted": "a Linear weight (out, in) or a Conv2d weight (out, in, kh, kw)"},
    )


def _from_groups(groups: Tensor, like: Tensor) -> Tensor:
    """Inverse of `_groups_view`: back to the weight layout of `like`."""
    if like.dim() == 2:
        return groups.reshape(like.shape)
    out, cin, kh, kw = like.shape
    return groups.reshape(out, kh, kw, cin).permute(0, 3, 1, 2).contiguous()


def nm_keep_mask(score: Tensor, n: int = N_KEEP, m: int = M_GROUP) -> Tensor:
    """Bool mask shaped like `score`: in each group of m input weights, the n highest scores.

    Ties are broken towards the lower input index (stable sort), so the mask is deterministic.
    Raises InvalidInput for a non-finite score or an input dimension not divisible by m.
    """
    _check_nm(n, m)
    in_dim = score.shape[1] if score.dim() in (2, 4) else None
    if in_dim is None or in_dim % m:
        raise InvalidInput(
            f"score of shape {tuple(score.shape)} cannot be split into groups of {m} input weights",
            detail={"accepted": f"(out, in) or (out, in, kh, kw) with in % {m} == 0"},
        )
    if not torch.isfinite(score).all():
        raise InvalidInput("importance score has NaN or infinite entries", detail={"accepted": "finite scores"})
    groups = _groups_view(score.detach().float(), m)  # (G, m)
    order = torch.argsort(groups, dim=1, descending=True, stable=True)  # (G, m) best first
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return _from_groups(keep, score)


def nm_ineligible_reason(layer: nn.Module, m: int = M_GROUP) -> str | None:
    """Why `layer` cannot be pruned to N:M, or None if it can."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            return f"grouped convolution (groups={layer.groups}); sparse kernels need groups == 1"
        in_dim = layer.in_channels
    elif isinstance(layer, nn.Linear):
        in_dim = layer.in_features
    else:
        return f"{type(layer).__name__} is not a Linear or Conv2d layer"
    if in_dim % m:
        return f"input dimension {in_dim} is not a multiple of {m}"
    return None


def group_nonzeros(weight: Tensor, m: int = M_GROUP) -> Tensor:
    """Number of non-zeros in every group of m input weights: (G,) int tensor."""
    return (_groups_view(weight.detach(), m) != 0).sum(dim=1)


def nm_violations(weight: Tensor, n: int = N_KEEP, m: int = M_GROUP, limit: int = 10) -> list[str]:
    """Readable descriptions of (at most `limit`) groups with more than n non-zeros; [] if none."""
    _check_nm(n, m)
    if weight.dim() not in (2, 4) or weight.shape[1] % m:
        return [f"shape {tuple(weight.shape)} has no groups of {m} input weights"]
    counts = group_nonzeros(weight, m)  # (G,)
    bad = torch.nonzero(counts > n).flatten()[:limit]
    groups_per_row = weight.shape[1] // m  # groups along the input dimension
    return [
        f"group {int(g) % groups_per_row} of row {int(g) // groups_per_row} "
        f"has {int(counts[g])} non-zeros (> {n})"
        for g in bad
    ]


def check_2_4(weight: Tensor) -> bool:
    """True if every group of 4 input weights has at most 2 non-zeros (what sparse kernels accept)."""
    return not nm_violations(weight, N_KEEP, M_GROUP, limit=1)


def _validated_score(name: str, weight: Tensor, scores: dict[str, Tensor]) -> Tensor:
    if name not in scores:
        raise InvalidInput(
            f"no importance score for layer {name!r}",
            detail={"accepted": "scores keyed by every weight name in `layers`"},
        )
    score = scores[name]
    if score.shape != weight.shape:
        raise InvalidInput(
            f"score for {name!r} has shape {tuple(score.shape)}, weight has {tuple(weight.shape)}",
            detail={"accepted": "a score shaped exactly like the weight"},
        )
    return score.to(weight.device)


@torch.no_grad()
def prune_2_4_(
    model: nn.Module,
    scores: dict[str, Tensor],
    layers: dict[str, WeightLayer],
    n: int = N_KEEP,
    m: int = M_GROUP,
) -> PruneReport:
    """Zero, in place, the weights of every eligible layer that lose in their N:M group.

    `layers` maps weight parameter names to Linear/Conv2d modules (see `weight_layers`);
    `scores` maps the same names to importance tensors shaped like the weights (higher = keep).
    Ineligible layers are left untouched and listed in the report with the reason.
    `model` is the model that owns the layers (kept for symmetry with other in-place passes and
    to check the names belong to it).
    """
    _check_nm(n, m)
    owned = {id(p) for p in model.parameters()}
    report = PruneReport(n=n, m=m)
    for name, layer in layers.items():
        if id(layer.weight) not in owned:
            raise InvalidInput(f"layer {name!r} does not belong to the model being pruned")
        reason = nm_ineligible_reason(layer, m)
        if reason is not None:
            report.ineligible[name] = reason
            continue
        weight: Tensor = layer.weight  # type: ignore[assignment]  # Linear/Conv2d weight
        keep = nm_keep_mask(_validated_score(name, weight, scores), n, m)
        weight.masked_fill_(~keep, 0.0)  # +0.0 (a product would leave -0.0): what a delta's pattern writes back
        report.keep_masks[name] = keep
    return report


@torch.no_grad()
def recalibrate_batchnorm_(model: nn.Module, batches) -> list[str]:
    """Re-estimate BatchNorm running statistics on task data after pruning (no gradients, no weights change).

    Pruning half the weights shifts every activation's mean and variance; the ImageNet statistics no longer
    match. A cumulative average (momentum None) over `batches` (an iterable of (inputs, labels)) replaces them.
    Returns the state-dict names of the buffers that changed, so they can travel with the task's delta.
    """
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if not norms:
        return []
    was_training = model.training
    model.eval()
    saved = {}
    for name, bn in norms.items():
        saved[name] = bn.momentum
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():  # only the running statistics change: no graph for the trainable parameters
        for inputs, labels in batches:
            if len(labels) < 2:
                continue  # a last batch of one sample: BatchNorm on a 1x1 map cannot train on it (and it adds nothing)
            model(inputs)
    for name, bn in norms.items():
        bn.momentum = saved[name]
        bn.eval()
    model.train(was_training)
    return [f"{name}.{buffer}" for name in norms for buffer in ("running_mean", "running_var", "num_batches_tracked")]

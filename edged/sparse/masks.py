"""Trainable masks from importance scores: per-neuron top-K, global top-k, layer-mass top-k (TR-PTS), and
N:M-constrained per-neuron.

A mask is a bool tensor shaped like its weight. Every budget is met exactly and ties are broken
deterministically: by score (descending), then by flat position (ascending).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edged.errors import InvalidInput

Scores = dict[str, Tensor]
Masks = dict[str, Tensor]


def budget_to_count(budget: float, total: int) -> int:
    """Number of trainable entries for a budget given as a fraction of `total` weights (0 < budget <= 1)."""
    if not 0.0 < budget <= 1.0:
        raise InvalidInput(
            f"budget must be a fraction in (0, 1] of the backbone's weights, got {budget}",
            detail={"accepted": "e.g. 0.001 for 0.1 %"},
        )
    count = int(round(budget * total))
    if count < 1:
        raise InvalidInput(f"budget {budget} of {total} weights selects no entry; use at least {1 / total:.2e}")
    return count


def _rank_rows(score: Tensor) -> Tensor:
    """Column order of each row, best first, ties by lower column index. (rows, cols) -> (rows, cols) int64."""
    rows, cols = score.shape
    # A stable descending sort keeps equal scores in column order: deterministic tie-breaking.
    return torch.sort(score.double(), dim=1, descending=True, stable=True).indices


def per_neuron_topk(scores: Scores, k: int | None = None, count: int | None = None,
                    masses: dict[str, float] | None = None) -> Masks:
    """Each output row (neuron) keeps its best entries.

    Give `k` (entries per row, the same in every layer) or `count` (exact total over all layers).
    With `count`, every row gets count // rows entries (at most the shortest row); the remainder is shared
    between layers in proportion to their row counts, or to `masses` where given (`layer_masses`: TR-PTS's
    layer shares, the sum of a layer's selectable scores), by largest remainders, then layer order; inside a layer it
    goes to the rows whose next-best entry scores highest, one more per row at a time. So the budget spreads
    over all layers and neurons, as TaskEdge intends. Below one entry per row (0.1 % of MobileNetV2 is one per
    eight of its 17,056 rows), shares by rows give its last 1x1 conv (1,280 rows) 165 entries and its first
    conv (32 rows) 4; by TaskEdge's score mass on MNIST, 25 and 107: the layers the task's inputs drive hardest
    get the entries.
    """
    if (k is None) == (count is None):
        raise InvalidInput("give exactly one of k (entries per row) or count (total entries)")
    flat = {name: s.reshape(s.shape[0], -1) for name, s in scores.items()}  # (out, in * kh * kw)
    widths = {name: s.shape[1] for name, s in flat.items()}
    if k is not None:
        if k < 1 or k > min(widths.values()):
            raise InvalidInput(
                f"k={k} entries per row is not possible: rows have {min(widths.values())} to "
                f"{max(widths.values())} entries",
                detail={"accepted": f"1 <= k <= {min(widths.values())}"},
            )
        extra = {name: 0 for name in flat}
        base = k
    else:
        assert count is not None  # exactly one of k and count is given (checked above)
        base, extra = _share_count(flat, count, masses)
    masks = {}
    for name, score in flat.items():
        order = _rank_rows(score)  # (out, width) columns best first
        keep = torch.zeros_like(score, dtype=torch.bool)
        if base:
            keep.scatter_(1, order[:, :base], True)
        _add_extra_(keep, score, order, base, extra[name])
        masks[name] = keep.reshape(scores[name].shape)
    _reject_unselectable(scores, masks)
    return masks


def _reject_unselectable(scores: Scores, masks: Masks) -> None:
    """A selected entry scored -inf was excluded (N:M limit, pruned position): the budget is too large."""
    for name, keep in masks.items():
        if bool(torch.isneginf(scores[name].double()[keep]).any()):
            allowed = int(sum(int(torch.isfinite(s.double()).sum()) for s in scores.values()))
            raise InvalidInput(
                f"the budget selects entries that are excluded in {name} (N:M limit or pruned positions)",
                detail={"accepted": f"at most {allowed} entries in total, and per row at most the allowed ones"},
            )


def _add_extra_(keep: Tensor, score: Tensor, order: Tensor, base: int, extra: int) -> None:
    """Add `extra` entries to a layer: each row's next-best entry first (rows by that entry's score),
    then the one after, and so on, so the extra entries stay spread over the neurons."""
    rank = base
    while extra > 0:
        columns = order[:, rank]  # (out,) each row's entry at this rank
        candidates = score.double().gather(1, columns.unsqueeze(1)).flatten()
        rows = torch.sort(candidates, descending=True, stable=True).indices[:extra]
        keep[rows, columns[rows]] = True
        extra -= rows.numel()
        rank += 1


def _share_count(flat: Scores, count: int, masses: dict[str, float] | None = None) -> tuple[int, dict[str, int]]:
    """Split an exact total into a per-row base plus a per-layer remainder (largest-remainder method).

    The remainder is shared in proportion to each layer's rows (or score mass), capped by the entries the layer
    has left.
    """
    total = sum(s.numel() for s in flat.values())
    if not 1 <= count <= total:
        raise InvalidInput(f"cannot select {count} of {total} weights", detail={"accepted": f"1..{total}"})
    rows = {name: s.shape[0] for name, s in flat.items()}
    all_rows = sum(rows.values())
    base = min(count // all_rows, min(s.shape[1] for s in flat.values()))
    left = count - base * all_rows
    room = {name: flat[name].shape[0] * (flat[name].shape[1] - base) for name in flat}
    # by mass where given and any layer has some, else by rows
    weight = masses if masses is not None and sum(masses.values()) > 0 else {n: float(r) for n, r in rows.items()}
    quota = {name: left * weight[name] / sum(weight.values()) for name in flat}
    extra = {name: min(int(quota[name]), room[name]) for name in flat}
    # What rounding left goes to the largest fractional quotas first; what the caps left, in layer order.
    remaining = left - sum(extra.values())
    for name in sorted(flat, key=lambda n: -(quota[n] - int(quota[n]))):
        if remaining and extra[name] < room[name]:
            extra[name], remaining = extra[name] + 1, remaining - 1
    for name in flat:
        take = min(room[name] - extra[name], remaining)
        extra[name], remaining = extra[name] + take, remaining - take
    return base, extra


def global_topk(scores: Scores, count: int) -> Masks:
    """The `count` best entries over all layers together (scores compared across layers as they are)."""
    names = list(scores)
    flat = torch.cat([scores[n].double().flatten() for n in names])
    if not 1 <= count <= flat.numel():
        raise InvalidInput(f"cannot select {count} of {flat.numel()} weights", detail={"accepted": f"1..{flat.numel()}"})
    chosen = torch.sort(flat, descending=True, stable=True).indices[:count]
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[chosen] = True
    masks, start = {}, 0
    for name in names:
        size = scores[name].numel()
        masks[name] = keep[start : start + size].reshape(scores[name].shape)
        start += size
    _reject_unselectable(scores, masks)
    return masks


def layer_mass_topk(scores: Scores, count: int, masses: dict[str, float] | None = None) -> Masks:
    """TR-PTS's layer-wise allocation: `count` entries split over layers in proportion to each layer's score
    mass (the sum of its selectable scores: the Fisher mass with the `fisher` scorer), then each layer's best.

    Layer shares are rounded by largest remainders (ties in layer order), so the total is exactly `count`;
    a layer never gets more than its selectable entries, and what a capped layer cannot take is shared
    over the others by mass. Layers whose selectable scores are all zero share by size when no layer has mass.
    `masses` replaces the scores' own (`layer_masses`) where the shares should follow other scores.
    """
    flat = {name: s.double().flatten() for name, s in scores.items()}  # (numel,) per layer
    room = {name: int(torch.isfinite(s).sum()) for name, s in flat.items()}  # -inf: excluded (N:M, pruned)
    if not 1 <= count <= sum(room.values()):
        raise InvalidInput(f"cannot select {count} of {sum(room.values())} selectable weights",
                           detail={"accepted": f"1..{sum(room.values())}"})
    shares = _mass_shares(masses if masses is not None else layer_masses(scores), room, count)
    masks = {}
    for name, score in flat.items():
        keep = torch.zeros_like(score, dtype=torch.bool)
        keep[torch.sort(score, descending=True, stable=True).indices[: shares[name]]] = True
        masks[name] = keep.reshape(scores[name].shape)
    return masks


def layer_masses(scores: Scores) -> dict[str, float]:
    """Each layer's score mass: the sum of its selectable (finite), non-negative scores."""
    return {name: float(s[torch.isfinite(s)].double().clamp(min=0).sum()) for name, s in scores.items()}


def _mass_shares(mass: dict[str, float], room: dict[str, int], count: int) -> dict[str, int]:
    """Integer shares of `count` proportional to `mass`, each at most its `room`, summing to `count`."""
    shares = {name: 0 for name in mass}
    open_layers = [name for name in mass if room[name] > 0]
    left, quota = count, {}
    while open_layers:  # fill the layers whose proportional quota reaches their room, then share again
        by_mass = sum(mass[n] for n in open_layers) > 0
        weight = {n: mass[n] if by_mass else float(room[n]) for n in open_layers}
        quota = {n: left * weight[n] / sum(weight.values()) for n in open_layers}
        full = [n for n in open_layers if quota[n] >= room[n]]
        if not full:
            break
        for name in full:
            shares[name], left = room[name], left - room[name]
            open_layers.remove(name)
    for name in open_layers:  # quota < room here, so floor + 1 still fits
        shares[name] = int(quota[name])
    remaining = count - sum(shares.values())
    for name in sorted(open_layers, key=lambda n: -(quota[n] - int(quota[n])))[:remaining]:
        shares[name] += 1
    return shares


def nm_limited_scores(scores: Scores, n: int, m: int) -> Scores:
    """Scores with entries outside the best n of each m consecutive inputs of a row set to -inf.

    Feeding these to `per_neuron_topk` gives a mask with at most n of every m consecutive entries.
    Rows whose width is not a multiple of m are rejected.
    """
    if not 1 <= n <= m:
        raise InvalidInput(f"N:M needs 1 <= N <= M, got {n}:{m}")
    limited = {}
    for name, score in scores.items():
        flat = score.reshape(score.shape[0], -1).double()  # (out, in)
        if flat.shape[1] % m:
            raise InvalidInput(f"{name}: rows of {flat.shape[1]} entries do not split into groups of {m}")
        groups = flat.reshape(flat.shape[0], -1, m)  # (out, in / m, m)
        order = torch.sort(groups, dim=2, descending=True, stable=True).indices
        allowed = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, order[..., :n], True)
        limited[name] = groups.masked_fill(~allowed, float("-inf")).reshape(score.shape)
    return limited


def restrict_scores(scores: Scores, allowed: Masks) -> Scores:
    """Scores with entries outside `allowed` (e.g. 2:4-pruned positions) made unselectable."""
    return {name: s.double().masked_fill(~allowed[name], float("-inf")) if name in allowed else s for name, s in scores.items()}


def count_selected(masks: Masks) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))

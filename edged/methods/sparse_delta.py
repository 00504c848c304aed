"""Turn importance scores into a budgeted mask and sparse-delta parameters (every "sparse" method)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from edged.methods.options import MaskOptions
from edged.methods.base import Adaptation, backbone_layers
from edged.sparse.delta import attach_deltas_, merge_deltas_
from edged.sparse.layers import count_weights
from edged.sparse.masks import (budget_to_count, global_topk, layer_mass_topk, layer_masses, nm_limited_scores,
                                per_neuron_topk, restrict_scores)


def select_mask(
    model: nn.Module, scores: dict[str, Tensor], options: MaskOptions, allowed: Optional[dict[str, Tensor]] = None,
    shares_from: Optional[dict[str, Tensor]] = None,
) -> dict[str, Tensor]:
    """The trainable mask: budget or k, per-neuron (layers sharing by rows or by mass), global or by layer
    mass, optional N:M limit, inside `allowed`. The layers' mass shares come from `shares_from` where given (the
    task's own importance, where `scores` were boosted to align with other tasks' blocks: a boost picks entries
    inside a layer, it must not move budget between layers)."""
    nm = options.nm_pair()

    def selectable(raw: dict[str, Tensor]) -> dict[str, Tensor]:
        """Scores with the entries outside `allowed` or the N:M limit made unselectable (-inf)."""
        limited = restrict_scores(raw, allowed) if allowed is not None else raw
        return nm_limited_scores(limited, *nm) if nm is not None else limited

    scores = selectable(scores)
    if options.k is not None:
        return per_neuron_topk(scores, k=options.k)
    count = budget_to_count(options.budget, count_weights(backbone_layers(model)))
    if options.allocation == "global":
        return global_topk(scores, count)
    if options.allocation == "per_neuron":
        return per_neuron_topk(scores, count=count)
    masses = layer_masses(selectable(shares_from) if shares_from is not None else scores)
    if options.allocation == "layer_mass":
        return layer_mass_topk(scores, count, masses)
    return per_neuron_topk(scores, count=count, masses=masses)


def prepare_sparse(method: str, model: nn.Module, masks: dict[str, Tensor]) -> Adaptation:
    deltas = attach_deltas_(model, masks)
    return Adaptation(
        method=method,
        parameters=[d.values for d in deltas.values()],
        entries=sum(d.values.numel() for d in deltas.values()),
        # flat index into the weight = row * fan_in + column
        changed={name: d.rows * masks[name][0].numel() + d.cols for name, d in deltas.items()},
        merge_=lambda: merge_deltas_(model),
        info={"layers": len(deltas)},
    )

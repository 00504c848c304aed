"""Task-relevant token selection (TR-PTS, arXiv 2507.22872) for BERT-style text encoders.

After encoder layer `layer`, each text keeps the tokens that receive the most attention in that layer and
merges the rest into one token, their attention-weighted average; the later layers run on the kept tokens
plus the merged one, so their cost falls with the keep ratio.

The attention a token receives is that layer's attention probabilities averaged over heads and over every
real (unpadded) query. Not [CLS]'s row alone: edged's text backbones are mean-pooled (all-MiniLM-L6-v2 was
trained with mean pooling, its [CLS] was never trained as a summary), so every token's output counts, and
how much all tokens attend to a token is the pooled output's view of its importance.

The merged token stands for the tokens it replaced (ToMe's proportional attention): later layers see it with
an attention bias of log(its size), and the mean pooling weighs it by its size. Padding is never kept (it
scores -inf) and never merged; a text with no more real tokens than it keeps is unchanged, and when that holds
for a text of the batch's padded length (so for every text) the encoder runs as without selection, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from edged.errors import InvalidInput, Unsupported

KEEP_ALL = 1.0  # token_keep's default: the fraction 1, every token kept (selection off)
ACCEPTED_KEEP = "a fraction in (0, 1] of each text's tokens (1.0: all, selection off), or an integer count >= 2"


@dataclass(frozen=True)
class TokenSelection:
    keep: float  # a fraction in (0, 1), or a count >= 2
    layer: int  # the encoder layer whose attention picks the kept tokens; the layers after it run on them

    def slots(self, length: int) -> int:
        """Kept positions for inputs padded to `length` tokens: what a text of that many real tokens keeps. It comes
        from the shape, not the data, so the forward never waits on the GPU to learn it (and could be graphed)."""
        if self.keep < 1:
            return max(1, math.ceil(length * self.keep))  # float64, as kept_counts computes it
        return min(length, int(self.keep))

    def kept_counts(self, lengths: Tensor) -> Tensor:
        """(N,) real tokens of each text -> (N,) tokens it keeps (all of them when it has no more)."""
        if self.keep < 1:
            return torch.ceil(lengths.double() * self.keep).long().clamp(min=1)
        return lengths.clamp(max=int(self.keep))


def check_token_keep(keep: Any) -> None:
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or \
            not (0 < keep <= 1 or (keep >= 2 and float(keep).is_integer())):
        raise InvalidInput(f"token_keep must be {ACCEPTED_KEEP}, got {keep!r}")


def token_selection(options: Mapping[str, Any], encoder: nn.Module) -> Optional[TokenSelection]:
    """The selection the options ask for (None: off), checked against the encoder's layers."""
    keep, layer = options["token_keep"], options["token_layer"]
    check_token_keep(keep)
    if keep == KEEP_ALL:
        return None
    layers = _bert_layers(encoder)
    if not 0 <= layer <= len(layers) - 2:
        raise InvalidInput(f"token_layer must be in [0, {len(layers) - 2}] for this {len(layers)}-layer encoder "
                           f"(a later layer must run on the kept tokens), got {layer}")
    return TokenSelection(keep=float(keep), layer=int(layer))


def _bert_layers(encoder: Any) -> nn.ModuleList:
    """The encoder's layers, where it has the BERT layout that selection drives (BERT, RoBERTa, MiniLM, ...)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    attention = getattr(getattr(layers[0], "attention", None), "self", None) if layers else None
    if not (hasattr(encoder, "embeddings") and isinstance(layers, nn.ModuleList) and hasattr(attention, "query")):
        raise Unsupported(
            f"token selection needs a BERT-style encoder (embeddings, encoder.layer[i].attention.self.query/key); "
            f"this one is {type(encoder).__name__}", detail={"accepted": "BERT, RoBERTa, MiniLM and alike"})
    return layers


def encode_selected(encoder: Any, inputs: Mapping[str, Tensor],
                    selection: TokenSelection) -> tuple[Tensor, Tensor]:
    """{input_ids, attention_mask} (N, L) -> (hidden (N, T, H), sizes (N, T, 1)): the last hidden states and
    how many input tokens each position stands for (0: padding), T = L when no text of L tokens would merge, else
    R + 1 with R = `selection.slots(L)` (the most any text keeps when the batch is padded to its longest).

    No step reads a value back from the GPU: a sync per call left the GPU idle while the host launched the
    later layers (H100, bf16: 12.3 ms a call for 2.3 ms of kernels)."""
    mask = inputs["attention_mask"]  # (N, L), 1 for tokens, 0 for padding
    slots = selection.slots(mask.shape[1])
    if slots >= mask.shape[1]:  # no text of this padded length merges anything: the encoder unchanged
        hidden = encoder(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        return hidden, mask.unsqueeze(-1).to(hidden.dtype)
    kept = selection.kept_counts(mask.sum(dim=1)).clamp(max=slots)  # (N,)
    layers = _bert_layers(encoder)
    hidden = encoder.embeddings(input_ids=inputs["input_ids"])  # (N, L, H)
    sizes = mask.to(hidden.dtype)  # (N, L)
    bias = _attention_bias(sizes)  # (N, 1, 1, L), built once for the layers that share it
    for layer in layers[: selection.layer]:
        hidden = _run_layer(layer, hidden, bias)
    hidden, received = _run_layer_with_attention(layers[selection.layer], hidden, sizes, bias)
    hidden, sizes = _merge_unkept(hidden, received, sizes, kept, slots)
    bias = _attention_bias(sizes)  # (N, 1, 1, R + 1)
    for layer in layers[selection.layer + 1:]:
        hidden = _run_layer(layer, hidden, bias)
    return hidden, sizes.unsqueeze(-1)


def _attention_bias(sizes: Tensor) -> Tensor:
    """(N, T) token sizes -> (N, 1, 1, T) additive attention bias: log(size), the dtype's minimum for padding."""
    floor = torch.finfo(sizes.dtype).min
    return torch.where(sizes > 0, sizes.clamp(min=1).log(), floor)[:, None, None, :]


def _run_layer(layer: nn.Module, hidden: Tensor, bias: Tensor) -> Tensor:
    out = layer(hidden, bias)
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x layers return a tuple


def _run_layer_with_attention(layer: Any, hidden: Tensor, sizes: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """The layer's output (N, L, H) and the attention each token receives in it (N, L): probabilities averaged
    over heads and real queries, from the query and key projections the layer itself computes."""
    attention = layer.attention.self
    projected: dict[str, Tensor] = {}
    hooks = [module.register_forward_hook(lambda _m, _a, out, key=key: projected.__setitem__(key, out))
             for key, module in (("q", attention.query), ("k", attention.key))]
    try:
        out = _run_layer(layer, hidden, bias)
    finally:
        for hook in hooks:
            hook.remove()
    n, length, _ = hidden.shape
    heads = attention.num_attention_heads
    q, k = (projected[key].view(n, length, heads, -1).transpose(1, 2) for key in ("q", "k"))  # (N, heads, L, d)
    scores = q @ k.transpose(2, 3) / math.sqrt(q.shape[-1]) + bias  # (N, heads, L, L)
    probs = scores.softmax(dim=-1).mean(dim=1)  # (N, L queries, L keys)
    real = (sizes > 0).to(probs.dtype)  # (N, L)
    received = (probs * real[:, :, None]).sum(dim=1) / real.sum(dim=1, keepdim=True)  # (N, L keys)
    return out, received


def _merge_unkept(hidden: Tensor, received: Tensor, sizes: Tensor, kept: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """Keep each text's `kept` most-attended real tokens, merge its other real tokens into one.

    hidden (N, L, H), received (N, L), sizes (N, L), kept (N,) <= slots R -> hidden (N, R + 1, H), sizes (N, R + 1);
    a text keeping fewer than R fills the rest with padding (size 0), and one merging nothing has a merged token
    of size 0 (padding too)."""
    real = sizes > 0  # (N, L)
    order = received.masked_fill(~real, float("-inf")).sort(dim=1, descending=True, stable=True).indices
    top = order[:, :slots]  # (N, R) positions, most attended first
    in_slot = torch.arange(slots, device=kept.device)[None, :] < kept[:, None]  # (N, R)
    is_kept = torch.zeros_like(real).scatter_(1, top, in_slot)  # (N, L)
    merged = real & ~is_kept  # (N, L)
    weights = received * merged  # (N, L)
    merged_hidden = (weights[:, :, None] * hidden).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(
        min=torch.finfo(hidden.dtype).tiny)  # (N, H)
    kept_hidden = hidden.gather(1, top[:, :, None].expand(-1, -1, hidden.shape[-1]))  # (N, R, H)
    new_sizes = torch.cat([in_slot.to(sizes.dtype), merged.sum(dim=1, keepdim=True).to(sizes.dtype)], dim=1)
    return torch.cat([kept_hidden, merged_hidden[:, None, :]], dim=1), new_sizes

"""The adaptation's outputs: the delta artifact, and the merged model's state dict (`merged.safetensors`).

The delta is what an adaptation changed, as safetensors over the shared base model.

For each changed tensor `name`:
- sparse: `name::indices` (nnz,) int64 flat indices and `name::values` (nnz,) the NEW values there
  (replacement values, not differences, so applying them reproduces the adapted model bit for bit);
- dense:  `name::dense`, the whole new tensor (head, norm layers, full fine-tuning);
- 2:4:    `name::pattern` (ceil(numel / 8),) uint8, the layer's keep-mask bit-packed (edged.sparse.shared_pattern
  `pack_keep_mask`): applying zeroes every entry whose bit is 0, then writes the trained entries (which win).
  Format 1 stored the pruning zeros as indices and values, 12 bytes each instead of 1 bit a weight.
Metadata (strings): `delta_format` (DELTA_FORMAT; absent in format 1), method, budget, base model, trainable
entries, layer names, edged version.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Mapping
from typing import Optional

import torch
from torch import Tensor, nn

from edged import __version__
from edged.errors import InvalidInput
from edged.methods.base import Adaptation
from edged.pipeline.config import AdaptConfig
from edged.sparse.shared_pattern import pack_keep_mask
from edged.store.tensor_files import save_tensors_atomic
from edged.tasks.delta import DELTA_FORMAT, HEAD_PREFIX, parse_delta, pruned_indices


def delta_tensors(model: nn.Module, changed: dict[str, Optional[Tensor]],
                  keep_masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The delta's tensors: `changed` (name -> flat indices, or None for the whole tensor) and the 2:4 keep-masks
    of the pruned weights (name -> bool shaped like the weight) not already stored whole."""
    state = model.state_dict()
    tensors = {f"{name}::pattern": pack_keep_mask(keep) for name, keep in keep_masks.items()
               if not (name in changed and changed[name] is None)}
    for name, indices in changed.items():
        value = state[name].detach().cpu()
        if indices is None:
            tensors[f"{name}::dense"] = value.contiguous()
        else:
            idx = indices.detach().cpu().to(torch.int64)
            tensors[f"{name}::indices"] = idx
            tensors[f"{name}::values"] = value.flatten()[idx].contiguous()
    return tensors


def save_delta(path: Path, model: nn.Module, changed: dict[str, Optional[Tensor]], keep_masks: Mapping[str, Tensor],
               metadata: dict) -> Path:
    tensors = delta_tensors(model, changed, keep_masks)
    meta = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    meta["delta_format"] = str(DELTA_FORMAT)
    meta["edged_version"] = __version__
    meta["layers"] = json.dumps(sorted(set(changed) | set(keep_masks)))
    return save_tensors_atomic(path, tensors, meta)


@torch.no_grad()
def apply_delta_(model: nn.Module, path: Path) -> None:
    """Write a delta (any format this edged reads) into `model`, the same base model with the same head shape:
    the pruning zeros, then the trained entries (which win over a zero), the whole tensors and the head."""
    delta = parse_delta(path.read_bytes(), str(path))
    state = model.state_dict()
    head = dict(delta.head.named_parameters(prefix=HEAD_PREFIX.rstrip(".")))
    missing = sorted((set(delta.sparse) | set(delta.dense) | set(delta.pruned) | set(head)) - set(state))
    if missing:
        raise InvalidInput(f"delta names {missing[0]!r}, which this model does not have")
    for name, bits in delta.pruned.items():
        target = state[name].view(-1)
        trained = delta.sparse[name][0] if name in delta.sparse else None
        target[pruned_indices(bits, target.numel(), trained, f"{path}: {name}").to(target.device)] = 0.0
    for name, (indices, values) in delta.sparse.items():
        target = state[name].view(-1)
        target[indices.to(target.device)] = values.to(target.dtype).to(target.device)
    for name, value in (delta.dense | head).items():
        state[name].copy_(value)


def write_outputs(model: nn.Module, adaptation: Adaptation, directory: Path, config: AdaptConfig,
                  base_model: str, keep_masks: Optional[Mapping[str, Tensor]] = None) -> dict[str, Path]:
    """The delta (with the head whole, and the 2:4 `keep_masks` when pruned) and the merged model's state dict,
    written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = dict(adaptation.changed)
    changed.update({name: None for name in model.state_dict() if name.startswith("head.")})
    metadata = {"method": config.method, "budget": config.budget, "base_model": base_model,
                "trainable_entries": adaptation.entries, "config": config.model_dump()}
    delta = save_delta(directory / "delta.safetensors", model, changed, keep_masks or {}, metadata)
    merged = save_tensors_atomic(directory / "merged.safetensors", model.state_dict(),
                                 {"base_model": base_model, "method": config.method})
    return {"delta": delta, "merged": merged}

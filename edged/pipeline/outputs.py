"""The adaptation's outputs: the delta artifact, and the merged model's state dict (`merged.safetensors`).

The delta is what an adaptation changed, as safetensors over the shared base model.

For each changed tensor `name`:
- sparse: `name::indices` (nnz,) int64 flat indices and `name::values` (nnz,) the NEW values there
  (replacement values, not differences, so applying them reproduces the adapted model bit for bit);
- dense:  `name::dense`, the whole new tensor (head, norm layers, full fine-tuning).
Metadata (strings): method, budget, base model, trainable entries, layer names, edged version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from edged import __version__
from edged.errors import InvalidInput
from edged.methods.base import Adaptation
from edged.pipeline.config import AdaptConfig
from edged.store.tensor_files import save_tensors_atomic


def delta_tensors(model: nn.Module, changed: dict[str, Optional[Tensor]]) -> dict[str, Tensor]:
    state = model.state_dict()
    tensors = {}
    for name, indices in changed.items():
        value = state[name].detach().cpu()
        if indices is None:
            tensors[f"{name}::dense"] = value.contiguous()
        else:
            idx = indices.detach().cpu().to(torch.int64)
            tensors[f"{name}::indices"] = idx
            tensors[f"{name}::values"] = value.flatten()[idx].contiguous()
    return tensors


def save_delta(path: Path, model: nn.Module, changed: dict[str, Optional[Tensor]], metadata: dict) -> Path:
    tensors = delta_tensors(model, changed)
    meta = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    meta["edged_version"] = __version__
    meta["layers"] = json.dumps(sorted(changed))
    return save_tensors_atomic(path, tensors, meta)


@torch.no_grad()
def apply_delta_(model: nn.Module, path: Path) -> int:
    """Write a delta's values into `model` (the same base model and head shape). Returns tensors touched."""
    tensors = load_file(str(path))
    state = model.state_dict()
    touched = set()
    for key, value in tensors.items():
        name, _, part = key.rpartition("::")
        if name not in state:
            raise InvalidInput(f"delta names {name!r}, which this model does not have")
        target = state[name]
        if part == "dense":
            target.copy_(value)
        elif part == "values":
            target.view(-1)[tensors[f"{name}::indices"].to(target.device)] = value.to(target.dtype).to(target.device)
        touched.add(name)
    return len(touched)


def write_outputs(model: nn.Module, adaptation: Adaptation, directory: Path, config: AdaptConfig,
                  base_model: str) -> dict[str, Path]:
    """The delta (with the head whole) and the merged model's state dict, written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = dict(adaptation.changed)
    changed.update({name: None for name in model.state_dict() if name.startswith("head.")})
    metadata = {"method": config.method, "budget": config.budget, "base_model": base_model,
                "trainable_entries": adaptation.entries, "config": config.model_dump()}
    delta = save_delta(directory / "delta.safetensors", model, changed, metadata)
    merged = save_tensors_atomic(directory / "merged.safetensors", model.state_dict(),
                                 {"base_model": base_model, "method": config.method})
    return {"delta": delta, "merged": merged}

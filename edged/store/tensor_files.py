"""safetensors files that survive a power loss: the one writer and reader of a job's stage files and checkpoints.

Writing goes temp file -> fsync -> rename -> fsync of the directory, so after a crash the final name holds
either the old file or the whole new one, never a torn one (without the fsyncs, the rename can reach the
disk before the data). Each file carries the sha256 of its tensors in its metadata; reading checks it, so a
file torn or damaged anyway (a disk that lied about a flush, a bad sector) reads as absent and its stage
is redone instead of loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from edged.store.blobs import fsync_dir

log = logging.getLogger(__name__)

DIGEST_KEY = "edged_tensors_sha256"


@dataclass
class TensorFile:
    tensors: dict[str, Tensor]
    metadata: dict[str, str]


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_tensors_atomic(path: Path, tensors: dict[str, Tensor], metadata: Optional[dict[str, str]] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(cpu, str(tmp), metadata={**(metadata or {}), DIGEST_KEY: tensors_digest(cpu)})
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)
    return path


def load_tensors(path: Path) -> Optional[TensorFile]:
    """The file's tensors and metadata; None when it is missing, torn, unreadable or fails its digest."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = dict(handle.metadata() or {})
            names = handle.keys()  # a safe_open handle is not a dict: it has keys() but no iteration
            tensors = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as exc:
        log.warning("%s is torn or unreadable (%s); its stage is redone", path, exc)
        return None
    expected = metadata.pop(DIGEST_KEY, None)
    if expected != tensors_digest(tensors):
        log.warning("%s does not match its digest (torn or damaged); its stage is redone", path)
        return None
    return TensorFile(tensors, metadata)

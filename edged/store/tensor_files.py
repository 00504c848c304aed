"""safetensors files written atomically: a temporary file beside the target, then a rename, so a reader
(or a resumed job after a power loss) never sees a half-written file under the final name."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from safetensors.torch import save_file
from torch import Tensor


def save_tensors_atomic(path: Path, tensors: dict[str, Tensor], metadata: Optional[dict[str, str]] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path

"""Where each state-dict tensor of a model lives in its exported ONNX graph: what a TensorRT refit sends.

The ONNX exporter does not always keep the state-dict name: it folds `W.t()` of a Linear on 3-D inputs into a
new initializer (`val_0`, holding W^T). `refit_map` finds each tensor once, when the engine is built, by name
and otherwise by value (as W or W^T), and the map is stored next to the engine (`refit_map.json`), so a later
task switch sends the right initializer in the right orientation (`refit_arrays`). No TensorRT needed here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from edged.errors import Unsupported
from edged.sparse.nm import check_2_4


@dataclass
class RefitMap:
    """Where each state-dict tensor lives in the exported graph (what refit sends it as)."""

    initializers: dict[str, str] = field(default_factory=dict)  # state name -> ONNX initializer name
    transposed: list[str] = field(default_factory=list)  # state names stored as W^T (MatMul weights)
    two_four: list[str] = field(default_factory=list)  # state names 2:4 at build time: must stay 2:4
    unmapped: dict[str, str] = field(default_factory=dict)  # state name -> why it has no initializer

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: Path) -> RefitMap:
        return cls(**json.loads(path.read_text()))


def _onnx_initializers(onnx_path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in onnx.load(str(onnx_path)).graph.initializer}


def _value_matches(want: np.ndarray, inits: dict[str, np.ndarray], free: set[str]) -> list[tuple[str, bool]]:
    """(initializer, transposed) pairs among `free` holding exactly `want` (as is, or as W^T for 2-D)."""
    hits = []
    for name in sorted(free):
        arr = inits[name]
        if arr.shape == want.shape and np.array_equal(arr, want):
            hits.append((name, False))
        elif want.ndim == 2 and arr.shape == want.T.shape and np.array_equal(arr, want.T):
            hits.append((name, True))
    return hits


def refit_map(onnx_path: Path, state: dict[str, Tensor], two_four: Iterable[str] = ()) -> RefitMap:
    """Map the floating-point tensors of `state` (the weights the graph was exported with) to initializers.

    By name first; otherwise by value among the initializers no state tensor is named after. A tensor whose
    value more than one initializer holds (or none) is left unmapped with the reason: a switch that changes
    it cannot be refitted and needs a rebuild.
    """
    inits = _onnx_initializers(Path(onnx_path))
    mapping = RefitMap(two_four=sorted(two_four))
    floats = {name: t for name, t in state.items() if t.is_floating_point()}
    free = set(inits) - set(floats)
    for name, tensor in floats.items():
        if name in inits:
            mapping.initializers[name] = name
            continue
        hits = _value_matches(tensor.detach().cpu().float().numpy(), inits, free)
        if len(hits) == 1:
            init, transposed = hits[0]
            mapping.initializers[name] = init
            free.discard(init)
            if transposed:
                mapping.transposed.append(name)
        else:
            mapping.unmapped[name] = ("not an initializer of the graph (folded into another by the exporter)"
                                      if not hits else f"ambiguous: initializers {[h[0] for h in hits]} hold its value")
    return mapping


def refit_arrays(mapping: RefitMap, target: dict[str, Tensor], names: Iterable[str]) -> dict[str, np.ndarray]:
    """initializer name -> float32 array oriented as in the graph: what a switch to `target` sends for `names`."""
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        if name not in mapping.initializers:
            why = mapping.unmapped.get(name, "not a floating-point tensor of the exported model")
            raise Unsupported(f"{name} cannot be refitted ({why}); rebuild the engine for this task")
        tensor = target[name].detach().cpu().float()
        if name in mapping.two_four and not check_2_4(tensor):
            raise Unsupported(f"{name} was 2:4 when the engine was built but is not in this task; its sparse tactics "
                              "would not hold: rebuild the engine, or share the base's 2:4 pattern")
        array = tensor.numpy().T if name in mapping.transposed else tensor.numpy()
        arrays[mapping.initializers[name]] = np.ascontiguousarray(array)
    return arrays

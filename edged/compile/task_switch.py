"""A task switch on a compiled model: which tensors it changes, and the cusparselt backend's recompression.

When the tasks on a base share one 2:4 pattern (`edged.sparse.shared_pattern`), a switch changes values only,
so a compiled model need not be compiled again: the layers whose values changed are recompressed and the
others are left alone. A compressed 2:4 weight can only be written whole (its values and metadata are
interleaved), so the unit is the layer, not the entry.

Recompression is in place, into the buffers the compiled layer already holds: the cuSPARSELt plans built for
them and the CUDA graphs that replay the model read the new values without being rebuilt or recaptured.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import Tensor, nn

from edged.compile.semi_structured import DTYPE, SemiSparseLinear, torch_semi_structured_weight
from edged.errors import InvalidInput, Unsupported
from edged.sparse.nm import check_2_4


def changed_tensors(current: dict[str, Tensor], target: dict[str, Tensor]) -> list[str]:
    """State-dict names whose values differ between two tasks' merged models (what a switch must send)."""
    if current.keys() != target.keys():
        raise InvalidInput("the two tasks' state dicts name different tensors: they are not on one base",
                           detail={"only_current": sorted(current.keys() - target.keys())[:10],
                                   "only_target": sorted(target.keys() - current.keys())[:10]})
    return [name for name in current if not torch.equal(current[name], target[name])]


def _semi_structured(weight: object) -> bool:
    from torch.sparse import SparseSemiStructuredTensor

    return isinstance(weight, SparseSemiStructuredTensor)


def _refill_semi_structured_(layer: nn.Module, dense: Tensor) -> str:
    """torch's SparseSemiStructuredTensor weight of `layer` recompressed from `dense` (out, in)."""
    from torch.sparse import SparseSemiStructuredTensor, SparseSemiStructuredTensorCUTLASS

    old = cast(SparseSemiStructuredTensor, layer.weight)
    cutlass = isinstance(old, SparseSemiStructuredTensorCUTLASS)
    new = cast(SparseSemiStructuredTensor, torch_semi_structured_weight(dense, cutlass=cutlass))  # same kernel family
    inner_old, _ = old.__tensor_flatten__()  # names of the packed values / metadata tensors it holds
    inner_new, _ = new.__tensor_flatten__()
    same_layout = inner_old == inner_new and all(
        getattr(old, key).shape == getattr(new, key).shape for key in inner_old)
    family = "CUTLASS" if cutlass else "cuSPARSELt"
    if not same_layout:  # not expected for one shape and dtype; replacing still gives the right values
        layer.weight = new
        return f"torch semi-structured ({family}): replaced (a CUDA graph of this model must be recaptured)"
    for key in inner_old:
        getattr(old, key).copy_(getattr(new, key))
    return f"torch semi-structured ({family}): recompressed in place"


def _recompress_layer_(model: nn.Module, name: str, value: Tensor) -> str | None:
    """Recompress the compiled 2:4 layer whose weight is `name`; None when `name` is not such a weight."""
    module_name, _, leaf = name.rpartition(".")
    if leaf != "weight":
        return None
    layer = model.get_submodule(module_name)
    if isinstance(layer, SemiSparseLinear):
        dense = value.to(layer.compressed.data.device, DTYPE).contiguous()  # (out, in)
    elif _semi_structured(getattr(layer, "weight", None)):
        dense = value.to(cast(Tensor, layer.weight).device, DTYPE).contiguous()  # (out, in)
    else:
        return None
    if not check_2_4(dense):
        raise Unsupported(f"{name} is not 2:4 in the new task: a compressed layer cannot take it; compile the task "
                          "anew (or share the base's 2:4 pattern)")
    if isinstance(layer, SemiSparseLinear):
        layer.compressed.recompress_(dense)
        return "edged cuSPARSELt: recompressed in place"
    return _refill_semi_structured_(layer, dense)


@torch.inference_mode()  # the compiled model's tensors were made in inference mode; in-place writes need it too
def recompress_changed_(model: nn.Module, target: dict[str, Tensor], changed: Iterable[str]) -> dict[str, str]:
    """Switch a cusparselt-compiled model to the task whose merged state dict is `target`, writing only the
    tensors named in `changed` (`changed_tensors`): 2:4 layers are recompressed from the new dense weight,
    other tensors (dense layers, biases, norms, the head) copied. Returns {name: what was done}."""
    done: dict[str, str] = {}
    plain = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name in changed:
        if name not in target:
            raise InvalidInput(f"{name!r} changes but the target task has no such tensor")
        what = _recompress_layer_(model, name, target[name])
        if what is None:
            if name not in plain:
                raise InvalidInput(f"the compiled model has no tensor {name!r} to switch")
            plain[name].copy_(target[name].to(plain[name].device, plain[name].dtype))
            what = "copied"
        done[name] = what
    return done

"""Model inputs as edged passes them around: one Tensor (images) or a dict of Tensors (text).

Both the exporters and the backends call models through these helpers, so every stage accepts
the same two forms.
"""

from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor, nn

from edged.errors import InvalidInput

ModelInputs = Union[Tensor, dict[str, Tensor]]


def validate_inputs(inputs: Any) -> ModelInputs:
    """Return `inputs` if it is a Tensor or a non-empty dict of Tensors, else raise InvalidInput."""
    if isinstance(inputs, Tensor):
        return inputs
    if isinstance(inputs, dict) and inputs and all(isinstance(v, Tensor) for v in inputs.values()):
        return inputs
    raise InvalidInput(
        f"model inputs of type {type(inputs).__name__} are not supported",
        detail={"accepted": "a Tensor (images) or a dict of Tensors such as input_ids, attention_mask"},
    )


def call_model(model: nn.Module, inputs: ModelInputs) -> Tensor:
    """model(x) for a Tensor, model(**x) for a dict; returns the logits tensor."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)  # e.g. a transformers ModelOutput
    if isinstance(logits, Tensor):
        return logits
    raise InvalidInput(
        f"model returned {type(out).__name__}, not logits",
        detail={"accepted": "a model returning a Tensor or an object with a .logits Tensor"},
    )


def map_tensors(inputs: ModelInputs, fn: Any) -> ModelInputs:
    """Apply `fn` to the tensor, or to every tensor of the dict."""
    if isinstance(inputs, dict):
        return {k: fn(v) for k, v in inputs.items()}
    return fn(inputs)


def to_device(inputs: ModelInputs, device: torch.device | str, float_dtype: torch.dtype | None = None) -> ModelInputs:
    """Move inputs to `device`; cast floating tensors (not token ids or masks) to `float_dtype`."""

    def move(t: Tensor) -> Tensor:
        if float_dtype is not None and t.is_floating_point():
            return t.to(device=device, dtype=float_dtype)
        return t.to(device)

    return map_tensors(inputs, move)


def batch_size(inputs: ModelInputs) -> int:
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    return int(first.shape[0])


def at_least_batch_2(inputs: ModelInputs) -> ModelInputs:
    """Repeat a batch of one to two: exporters specialise a size-1 dimension to a constant."""
    if batch_size(inputs) >= 2:
        return inputs
    return map_tensors(inputs, lambda t: torch.cat([t, t], dim=0))


def export_args(inputs: ModelInputs) -> tuple[tuple, dict[str, Tensor]]:
    """(args, kwargs) for torch.export / torch.onnx.export."""
    if isinstance(inputs, dict):
        return (), dict(inputs)
    return (inputs,), {}


def dynamic_shapes(inputs: ModelInputs) -> Any:
    """Batch dimension dynamic everywhere; sequence length dynamic for 2-D integer (token) inputs."""
    auto = torch.export.Dim.AUTO

    def dims(t: Tensor) -> dict[int, Any]:
        token_like = t.dim() == 2 and not t.is_floating_point()
        return {0: auto, 1: auto} if token_like else {0: auto}

    if isinstance(inputs, dict):
        return {k: dims(v) for k, v in inputs.items()}
    return (dims(inputs),)

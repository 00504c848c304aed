"""ONNX export of a merged model, the 2:4 check of its initializers, and an onnxruntime runner.

We use torch.onnx's dynamo exporter (torch.export + onnxscript, both local, nothing downloaded):
the TorchScript exporter is deprecated in recent torch. The dynamo exporter folds `W.t()` of a
Linear with 3-D input into a new, transposed initializer with a generated name (e.g. `val_4`),
so the check finds each pruned weight by name first and otherwise by value, as W or W^T.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edged.errors import InvalidInput, Unavailable, Unsupported
from edged.compile.inputs import (
    ModelInputs,
    at_least_batch_2,
    call_model,
    dynamic_shapes,
    export_args,
    validate_inputs,
)
from edged.compile.pattern import PatternCheck, weight_problem

OPSET = 18


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise Unavailable(
            f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing)",
            detail={"accepted": "pip install onnx onnxscript"},
        ) from exc


@torch.no_grad()
def export_onnx(model: nn.Module, inputs: ModelInputs, path: str | Path) -> Path:
    """Export `model` (eval mode, CPU, float32) to a single self-contained ONNX file at `path`.

    The batch dimension is dynamic (and the sequence length of token inputs), so the file runs
    at any batch size. `inputs` is an example: a Tensor or a dict of Tensors.
    """
    _require_onnx()
    inputs = at_least_batch_2(validate_inputs(inputs))
    args, kwargs = export_args(inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter, not about this model
        torch.onnx.export(
            model.eval(),
            args,
            str(path),
            kwargs=kwargs,
            dynamo=True,
            dynamic_shapes=dynamic_shapes(inputs),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    return path


def _initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _find_weight(name: str, expected: Tensor, inits: dict[str, np.ndarray]) -> tuple[str, Tensor] | None:
    """(initializer name, tensor oriented like `expected`) for the layer's weight, or None."""
    if name in inits:
        return name, torch.from_numpy(inits[name].copy())
    want = expected.detach().cpu().float().numpy()
    for init_name, arr in inits.items():
        if arr.shape == want.shape and np.array_equal(arr, want):
            return init_name, torch.from_numpy(arr.copy())
        if want.ndim == 2 and arr.shape == want.T.shape and np.array_equal(arr.T, want):
            return init_name, torch.from_numpy(arr.T.copy())  # MatMul weight stored (in, out)
    return None


def check_onnx_2_4(path: str | Path, expected_layers: dict[str, Tensor]) -> PatternCheck:
    """Verify every pruned weight in `expected_layers` (name -> pruned weight) is an initializer
    of the ONNX file with exactly the same N:M zero pattern (transposed MatMul weights included)."""
    _require_onnx()
    path = Path(path)
    inits = _initializers(path)
    check = PatternCheck(artifact=str(path))
    for name, expected in expected_layers.items():
        hit = _find_weight(name, expected, inits)
        if hit is None:
            check.problems[name] = "not found as an initializer (folded, cast or changed by the exporter)"
            continue
        init_name, actual = hit
        problem = weight_problem(expected.float(), actual.float())
        if problem:
            check.problems[name] = f"initializer {init_name!r}: {problem}"
        else:
            check.found[name] = init_name
    return check


class OnnxRunner:
    """An onnxruntime CPU session that takes the same inputs as the PyTorch model; `path` is the ONNX file, or its
    bytes (the task server passes bytes it has verified against their digest, so what runs is what was checked)."""

    def __init__(self, path: str | Path | bytes, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Unavailable("onnxruntime is not installed", detail={"accepted": "pip install onnxruntime"}) from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        model = path if isinstance(path, bytes) else str(path)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def feeds(self, inputs: ModelInputs) -> dict[str, np.ndarray]:
        if isinstance(inputs, Tensor):
            return {self.input_names[0]: inputs.detach().cpu().numpy()}
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise InvalidInput(f"inputs lack {missing}", detail={"accepted": self.input_names})
        return {n: inputs[n].detach().cpu().numpy() for n in self.input_names}

    def __call__(self, inputs: ModelInputs) -> Tensor:
        (logits, *_) = self.session.run(None, self.feeds(validate_inputs(inputs)))
        return torch.from_numpy(logits)


@torch.no_grad()
def onnx_max_abs_diff(
    model: nn.Module, path: str | Path, inputs: ModelInputs, atol: float = 1e-4, rtol: float = 1e-3
) -> float:
    """Largest |onnxruntime - PyTorch| on `inputs`; raises Unsupported beyond atol + rtol * |ref|."""
    ref = call_model(model.eval(), inputs).float()
    got = OnnxRunner(path)(inputs).float()
    if got.shape != ref.shape:
        raise Unsupported(f"onnxruntime output shape {tuple(got.shape)} != PyTorch {tuple(ref.shape)}")
    diff = (got - ref).abs()
    if not bool((diff <= atol + rtol * ref.abs()).all()):
        raise Unsupported(
            f"onnxruntime output differs from PyTorch by up to {float(diff.max()):.3g}",
            detail={"atol": atol, "rtol": rtol, "accepted": "outputs within tolerance"},
        )
    return float(diff.max())

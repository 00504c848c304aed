"""cuSPARSELt's INT8 2:4 kernel per Linear shape, timed in worker processes, then kept only where the whole
model gains.

Why: `Int8SparseLinear` called cuSPARSELt with alg id 0, the library's default, at every shape. For fp16 the
default kernel ran at 0.46-0.71x of dense where the best alg id reached up to 1.53x (issue 13's probe), and the
INT8 2:4 MLP stack ran at 0.99x fp16 dense at batch 1 and 1.29x at batch 8 (H100, README) while its weights are a
quarter of fp16 dense's bytes. So each (out, in, bias, tokens) is timed here at every alg id up to `sweep_algs`,
each from a CUDA graph with its output checked against the fp16 dense layer (INT8 tolerance), and the fastest
verified one is the shape's kernel. An alg id past the shape's last is refused by the library as an error.
Measured on an H100 (README, "the INT8 2:4 kernels tuned per shape"): the chosen ids beat alg 0 by 1.2-2.9x per
MLP shape, and the MLP stack's INT8 2:4 went from 0.97-1.71x to 1.81-2.34x fp16 dense at batches 1-128.

Split-K is not swept: cuSPARSELt 0.8 refused an explicit split on the H100 for fp16 (`sparse_tuning`).
Workers: a cuSPARSELt kernel can die with "illegal instruction" and leave CUDA broken (`isolation`).
"""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from edged.compile.in_place import paired_ms
from edged.compile.int8_gemm import Int8SparseLinear
from edged.compile.isolation import run_isolated, worker_main
from edged.compile.semi_structured import DTYPE, Shape, check_close
from edged.compile.sparse_tuning import GRAPH_REPEAT, cuda_healthy, random_2_4_linear
from edged.measure.timing import time_cuda

WORKER = "edged.compile.int8_tuning"
INT8_LAYER_TOL = 0.05  # one INT8 layer against fp16 dense on random inputs (tests/compile/test_int8_gemm.py)


@torch.inference_mode()
def tune_int8_case(case: dict[str, Any]) -> dict[str, Any]:
    """Worker: Linear (case out, in, bias) as INT8 2:4 with case alg_id at case tokens rows, checked against
    fp16 dense and timed from a CUDA graph (ms per call)."""
    torch.manual_seed(0)
    layer = random_2_4_linear(case["out"], case["in"], case["bias"])
    x = torch.randn(case["tokens"], case["in"], device="cuda", dtype=DTYPE)  # (T, in)
    int8 = Int8SparseLinear(layer.weight, layer.bias, float(x.abs().max()), alg_id=case["alg_id"])
    err = check_close(int8(x), layer(x), f"INT8 2:4 alg {case['alg_id']}", INT8_LAYER_TOL)
    timing = time_cuda(partial(int8, x), x.shape[0], iters=case.get("iters", 20), cuda_graph=True, repeat=GRAPH_REPEAT)
    return {"ms": timing.p50_ms, "rel_err": err}


def plan_int8(shapes: list[Shape], sweep_algs: int, timeout_s: float, iters: int = 10) -> dict[Shape, dict[str, Any]]:
    """{shape: {"alg_id", "ms", "default_ms", "verified"}}: the fastest verified alg id of the first `sweep_algs`
    for each shape (alg 0's ms beside it), or alg 0 with why where none ran. Alg-major, so a kernel that breaks a
    worker is skipped for the later shapes (its group)."""
    cases: list[dict[str, Any]] = [
        {"out": o, "in": i, "bias": b, "tokens": t, "alg_id": alg, "iters": iters, "group": f"int8 alg {alg}"}
        for alg in range(sweep_algs) for (o, i, b, t) in shapes]
    rows = run_isolated(WORKER, cases, timeout_s, max_breaks=1) if cases else []
    return {shape: fastest_alg([(case["alg_id"], row) for case, row in zip(cases, rows)
                                if (case["out"], case["in"], case["bias"], case["tokens"]) == shape])
            for shape in shapes}


def fastest_alg(tried: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """One shape's verdict from its (alg id, worker row) pairs: the fastest verified alg id, or alg 0 and why."""
    ok = [(alg, row["ms"]) for alg, row in tried if "ms" in row]
    default = next((ms for alg, ms in ok if alg == 0), None)
    if not ok:
        errors = "; ".join(sorted({row.get("error", "?") for _, row in tried}))[:300]
        return {"alg_id": 0, "ms": None, "default_ms": None, "verified": 0, "error": errors or "not tried"}
    alg, ms = min(ok, key=lambda pair: pair[1])
    return {"alg_id": alg, "ms": ms, "default_ms": default, "verified": len(ok)}


def int8_layers(model: nn.Module) -> dict[str, Int8SparseLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, Int8SparseLinear)}


@torch.inference_mode()
def int8_shapes(model: nn.Module, inputs: torch.Tensor) -> dict[str, Shape]:
    """{layer name: (out, in, bias, tokens)} of every Int8SparseLinear, tokens as one forward of `inputs` gives."""
    layers, shapes = int8_layers(model), dict[str, Shape]()
    hooks = [m.register_forward_pre_hook(partial(_record, shapes, name)) for name, m in layers.items()]
    try:
        model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _record(shapes: dict[str, Shape], name: str, module: Int8SparseLinear, args: tuple) -> None:
    x = args[0]  # (..., in)
    shapes[name] = (module.out_features, module.in_features, module.bias is not None, x.numel() // x.shape[-1])


def set_int8_kernels_(model: nn.Module, shapes: dict[str, Shape], plan: dict[Shape, dict[str, Any]] | None) -> None:
    """Each INT8 2:4 layer's alg id from `plan` by its shape (alg 0 where the shape was not planned, or no plan)."""
    for name, layer in int8_layers(model).items():
        layer.alg_id = 0 if plan is None else plan.get(shapes[name], {}).get("alg_id", 0)


def tuned_in_place_(model: nn.Module, inputs: torch.Tensor, batch: int, plan: dict[Shape, dict[str, Any]],
                    timed: Any) -> dict[str, Any]:
    """Set the planned alg ids on `model`'s INT8 2:4 layers, then keep them only if the whole model, timed by
    `timed(model) -> ms` in place, beats alg 0 everywhere; what was compared and kept. Timed alg 0, tuned, tuned,
    alg 0, each side the mean of its two: the GPU's clock drifts within seconds (`in_place.paired_ms`)."""
    shapes = int8_shapes(model, inputs)
    started = time.monotonic()
    default_ms, tuned_ms, kept = keep_faster(lambda tuned: set_int8_kernels_(model, shapes, plan if tuned else None),
                                             lambda: timed(model))
    per_shape = {f"{o}<-{i}{' +bias' if b else ''} @ {t} tokens": plan.get((o, i, b, t))
                 for o, i, b, t in sorted(set(shapes.values()))}
    return {"int8_kernels": per_shape, "int8_in_place": {"alg0_ms": default_ms, "tuned_ms": tuned_ms, "kept": kept,
                                                         "batch": batch, "seconds": time.monotonic() - started}}


def keep_faster(apply: Callable[[bool], None], timed: Callable[[], float]) -> tuple[float, float, bool]:
    """`apply(tuned)` then `timed()`, paired as the fp16 choice's trials are (`in_place.paired_ms`: alg 0, tuned,
    tuned, alg 0, each side the mean of its two); leaves the faster applied. (alg 0 ms, tuned ms, tuned kept)."""

    def model_ms(kernels: dict[str, str]) -> tuple[float | None, str]:
        apply(kernels["int8"] == "tuned")
        return timed(), ""

    tuned_ms, default_ms, _ = paired_ms(model_ms, {"int8": "alg 0"}, {"int8": "tuned"})
    assert tuned_ms is not None  # timed() returns a number or raises
    kept = tuned_ms < default_ms
    apply(kept)
    return default_ms, tuned_ms, kept


if __name__ == "__main__":  # a tuning worker (see isolation.run_isolated)
    sys.exit(worker_main(tune_int8_case, cuda_healthy))

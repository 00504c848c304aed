"""`edged bench sparse`: dense vs 2:4 latency (p50/p95/p99) and throughput, per layer and end to end.

On a CUDA GPU (fp16) it runs `edged.bench.sparse_e2e`: ViT-B/16 and an LLM-sized MLP stack end to end,
rows dense / torch 2:4 / edged's in-place per-layer choice / INT8 dense / INT8 2:4, with the per-layer
choices (about 4 minutes on an H200). `--probe` runs `edged.bench.sparse_gpu_probe` instead: ViT-B/16 layer shapes (qkv, proj,
fc1, fc2 at 197 tokens per image) and a ViT-B/16-sized encoder at batch 1, 8, 32, 128; per layer
torch's straightforward `to_sparse_semi_structured` path, edged's direct cuSPARSELt call and its
tuned config, eagerly and from CUDA graphs, against dense cuBLAS; end to end dense vs 2:4 with
sparse kept only where it wins. Every case is checked against dense and runs in a worker process,
so one failing kernel cannot break the rest. `--program` adds an adapted model end to end
(in-process, with energy per inference where a power source exists: NVML or jtop).
On a CPU it runs small shapes, eager vs onnxruntime, and says why 2:4 is unavailable.

    python -m edged.bench.sparse --device cuda --out sparse_bench.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edged.bench.cli_lists import IMAGE_SIZE, count, int_list, number
from edged.bench.sparse_e2e import FAMILIES, format_choices, format_e2e, run_e2e
from edged.bench.sparse_gpu_probe import format_tables, run_probe
from edged.bench.vit import VIT_B16, VitEncoder, VitShape, prune_by_magnitude_, tiny_vit_shape
from edged.compile.in_place import choose_in_place_
from edged.compile.semi_structured import probe
from edged.compile.onnx_export import OnnxRunner, export_onnx
from edged.compile.program import load_program_module
from edged.measure.clocks import graph_replay
from edged.measure.energy import energy_per_item, gpu_power_source
from edged.measure.timing import time_cpu, time_cuda

GPU_BATCHES = (1, 8, 32, 128)
CPU_BATCHES = (1, 4)
PROBE_BUDGET_S = 420.0


def layer_shapes(s: VitShape) -> list[tuple[str, int, int]]:
    return [(f"fc1 {s.dim}->{s.mlp}", s.dim, s.mlp), (f"fc2 {s.mlp}->{s.dim}", s.mlp, s.dim),
            (f"proj {s.dim}->{s.dim}", s.dim, s.dim)]


def _row(what: str, batch: int, dense: Any, sparse: Any, **extra: Any) -> dict[str, Any]:
    speedup = dense.p50_ms / sparse.p50_ms if dense is not None and sparse is not None else None
    return {"what": what, "batch": batch, "dense": dense.as_dict() if dense else None,
            "sparse": sparse.as_dict() if sparse else None, "speedup_p50": speedup, **extra}


def bench_model_gpu(what: str, model: nn.Module, example: Tensor, batch: int, iters: int, source: Any) -> dict:
    """Dense vs 2:4 (kernels chosen in place at this batch) model, both as CUDA graphs."""
    dense_model = model.to("cuda", torch.float16).eval()
    x = example.to("cuda", torch.float16)
    sparse_model = copy.deepcopy(dense_model)
    with torch.inference_mode():
        choice = choose_in_place_(sparse_model, x, batch)
        dense_fn, sparse_fn = graph_replay(partial(dense_model, x)), graph_replay(partial(sparse_model, x))
        dense = time_cuda(dense_fn, batch, iters=iters)
        sparse = time_cuda(sparse_fn, batch, iters=iters)
        energy = {"dense_j_per_item": energy_per_item(dense_fn, batch, source),
                  "sparse_j_per_item": energy_per_item(sparse_fn, batch, source)}
    del sparse_model
    torch.cuda.empty_cache()
    kernels = list(choice.layers.values())
    return _row(what, batch, dense, sparse, sparse_layers=sum(k != "dense" for k in kernels),
                dense_layers=kernels.count("dense"), energy=energy, kernels=choice.kernels)


def bench_cpu(shape: VitShape, batches: tuple[int, ...], iters: int) -> dict[str, list[dict]]:
    """CPU: dense per layer (no 2:4 kernels), and the encoder in eager PyTorch vs onnxruntime."""
    layers = []
    for batch in batches:
        for name, fan_in, fan_out in layer_shapes(shape):
            layer = nn.Linear(fan_in, fan_out).eval()
            x = torch.randn(batch * shape.tokens, fan_in)
            layers.append(_row(name, batch, time_cpu(partial(layer, x), batch, iters=iters), None,
                               tokens=batch * shape.tokens, sparse_unavailable="no 2:4 kernels on the CPU"))
    model = VitEncoder(shape).eval()
    prune_by_magnitude_(model)
    e2e = []
    with tempfile.TemporaryDirectory() as tmp:
        runner = OnnxRunner(export_onnx(model, torch.randn(2, 3, shape.image, shape.image), Path(tmp) / "vit.onnx"))
        for batch in batches:
            x = torch.randn(batch, 3, shape.image, shape.image)
            e2e.append(_row("encoder eager vs onnxruntime (both dense)", batch,
                            time_cpu(partial(model, x), batch, iters=iters),
                            time_cpu(partial(runner, x), batch, iters=iters),
                            sparse_unavailable="no 2:4 kernels on the CPU; 'sparse' column is onnxruntime"))
    return {"layers": layers, "end_to_end": e2e}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        info.update(gpu=torch.cuda.get_device_name(), capability=f"{major}.{minor}",
                    cuda=torch.version.cuda, cusparselt=torch.backends.cusparselt.version())
    return info


def run_sparse_bench(
    device: str = "auto",
    batches: tuple[int, ...] | None = None,
    shape: VitShape | None = None,
    adapted: tuple[nn.Module, Tensor] | None = None,
    iters: int = 100,
    out: str | Path | None = None,
    layer_probe: bool = False,
    tune_s: float = 40.0,
    sweep_algs: int = 6,
    families: tuple[str, ...] = FAMILIES,
) -> dict[str, Any]:
    """Run the benchmark; returns (and writes to `out` as JSON) machine, config and result rows.

    `adapted` = (model, example images batch of one) adds the adapted model end to end."""
    cuda_ok, why = probe()
    if device == "auto":
        device = "cuda" if cuda_ok else "cpu"
    result: dict[str, Any] = {"machine": machine(), "device": device, "sparse_backend": why}
    if device == "cpu":
        shape = shape or tiny_vit_shape()
        batches = batches or CPU_BATCHES
        result.update(bench_cpu(shape, batches, iters))
    else:
        if not cuda_ok:
            raise SystemExit(f"cannot run the GPU benchmark: {why}")
        shape = shape or VIT_B16
        batches = batches or GPU_BATCHES
        result.update(_bench_gpu(shape, batches, adapted, iters, out, layer_probe, tune_s, families, sweep_algs))
    result["config"] = {"batches": list(batches), "shape": vars(shape), "iters": iters, "tune_s": tune_s,
                        "sweep_algs": sweep_algs}
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2, default=str))
    return result


def _bench_gpu(shape: VitShape, batches: tuple[int, ...], adapted: tuple[nn.Module, Tensor] | None, iters: int,
               out: str | Path | None, layer_probe: bool, tune_s: float, families: tuple[str, ...],
               sweep_algs: int) -> dict:
    """The end-to-end rows (or the isolated layer probe); the adapted model (if any) in this process."""
    source, power = gpu_power_source()
    result: dict[str, Any] = {"power_source": power, "end_to_end": []}
    if layer_probe:
        with tempfile.TemporaryDirectory() as tmp:
            result["probe"] = run_probe(Path(out).parent if out else Path(tmp), list(batches), PROBE_BUDGET_S, iters,
                                        compiled=True, shape=shape)
    else:
        result["rows"] = run_e2e(list(batches), iters, source, tune_s, families, sweep_algs)
    if adapted is not None:
        model, example = adapted
        for batch in batches:
            x = example[:1].expand(batch, *example.shape[1:]).contiguous()
            result["end_to_end"].append(bench_model_gpu("adapted model", copy.deepcopy(model), x, batch, iters, source))
    return result


def _cell(timing: dict | None) -> str:
    if not timing:
        return "-"
    if "error" in timing:
        return "error"
    return f"{timing['p50_ms']:.3f}/{timing['p95_ms']:.3f}/{timing['p99_ms']:.3f}"


def format_table(rows: list[dict]) -> str:
    head = (f"{'what':<44} {'batch':>5} {'dense ms p50/p95/p99':>24} {'2:4 ms p50/p95/p99':>24} {'speedup':>7} "
            f"{'dense/s':>9} {'2:4/s':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        speed = f"{r['speedup_p50']:.2f}x" if r.get("speedup_p50") and r["speedup_p50"] == r["speedup_p50"] else "-"
        per_s = [f"{t['items_per_s']:.0f}" if t and "items_per_s" in t else "-" for t in (r["dense"], r["sparse"])]
        lines.append(f"{r['what'][:44]:<44} {r['batch']:>5} {_cell(r['dense']):>24} {_cell(r['sparse']):>24} "
                     f"{speed:>7} {per_s[0]:>9} {per_s[1]:>9}")
    return "\n".join(lines)


def _families(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model family {', '.join(unknown) or text!r}: "
                                         f"accepted {', '.join(FAMILIES)}, comma-separated")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edged bench sparse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--batches", type=int_list(example="1,8,32,128"), default=None,
                        help="comma-separated batch sizes (default 1,8,32,128 on GPU, 1,4 on CPU)")
    parser.add_argument("--iters", type=count(), default=100, help="timed iterations per measurement")
    parser.add_argument("--program", type=Path, help="adapted model: a torch.export .pt2 taking images")
    parser.add_argument("--image-size", type=IMAGE_SIZE, default=224, help="input size for --program")
    parser.add_argument("--probe", action="store_true", help="GPU: the isolated per-layer kernel probe instead")
    parser.add_argument("--tune-s", type=number(0.0, open_minimum=True), default=40.0,
                        help="GPU: seconds per model family for each per-shape alg-id tuning (fp16 2:4, then INT8 2:4)")
    parser.add_argument("--sweep-algs", type=count(), default=6,
                        help="GPU: cuSPARSELt alg ids swept per shape and layout (fp16) and per shape (INT8 2:4), lowest "
                             "first, within --tune-s (default 6)")
    parser.add_argument("--families", type=_families, default=FAMILIES,
                        help=f"GPU: comma-separated model families end to end, of {','.join(FAMILIES)} (default all)")
    parser.add_argument("--out", type=Path, default=Path("sparse_bench.json"))
    args = parser.parse_args(argv)
    adapted = None
    if args.program:
        adapted = (load_program_module(args.program), torch.randn(1, 3, args.image_size, args.image_size))
    batches = tuple(args.batches) if args.batches else None
    result = run_sparse_bench(args.device, batches, adapted=adapted, iters=args.iters, out=args.out,
                              layer_probe=args.probe, tune_s=args.tune_s, families=args.families,
                              sweep_algs=args.sweep_algs)
    print(f"machine: {result['machine']}\nsparse backend: {result['sparse_backend']}\n")
    if "probe" in result:
        print(format_tables(result["probe"]))
    elif "rows" in result:
        print(f"power: {result['power_source']}\n{format_e2e(result['rows'])}\n\nper layer group, in place\n"
              f"{format_choices(result['rows'])}")
    else:
        print("per layer")
        print(format_table(result["layers"]))
    if result["end_to_end"]:
        print("\nend to end" if result["device"] == "cpu" else "\nadapted model, end to end")
        print(format_table(result["end_to_end"]))
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tasks `edged bench switch` switches between, as the files a job leaves: `delta.safetensors` (what a
task switch writes) and `merged.safetensors` (the whole fine-tuned state dict, what a full-weight switch loads).

- CPU: real adaptations of the bundled MobileNetV2 (taskedge, budget 0.001, one epoch on a few hundred samples)
  to the bundled digit sets and label groupings of them, written by `edged.pipeline.outputs.write_outputs`;
- GPU: ViT-B/16 with deltas of real shape: per-neuron top-K masks at 0.1 % over every backbone Linear
  (K = max(1, round(0.001 * in_features)) entries per output row) with random values, and a random head.
Outputs are kept in the work directory, named by their settings, so a second run reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from edged.bench.train_step import build_backbone
from edged.bench.vit import VIT_B16
from edged.data.bundled import digits, mnist_5k
from edged.data.preprocess import preprocess_images
from edged.data.task import Inputs, TaskData
from edged.models.classifier import Classifier
from edged.models.loader import load_model
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig
from edged.pipeline.outputs import write_outputs
from edged.sparse.blocks import blocks_of, union_blocks
from edged.sparse.shared_pattern import unpack_keep_mask
from edged.tasks.delta import parse_delta

Grouping = Callable[[Tensor], tuple[Tensor, list[str]]]  # digit labels (N,) -> (new labels (N,), class names)


def _same(y: Tensor) -> tuple[Tensor, list[str]]:
    return y, [str(d) for d in range(10)]


def _even_odd(y: Tensor) -> tuple[Tensor, list[str]]:
    return y % 2, ["even", "odd"]


def _below_five(y: Tensor) -> tuple[Tensor, list[str]]:
    return (y >= 5).long(), ["<5", ">=5"]


def _mod_three(y: Tensor) -> tuple[Tensor, list[str]]:
    return y % 3, ["0 mod 3", "1 mod 3", "2 mod 3"]


@dataclass(frozen=True)
class DigitTask:
    name: str
    load: Callable[[], TaskData]
    grouping: Grouping


DIGIT_TASKS = [
    DigitTask("mnist", mnist_5k, _same), DigitTask("mnist-even-odd", mnist_5k, _even_odd),
    DigitTask("digits8x8", digits, _same), DigitTask("mnist-below-5", mnist_5k, _below_five),
    DigitTask("digits8x8-even-odd", digits, _even_odd), DigitTask("mnist-mod-3", mnist_5k, _mod_three),
    DigitTask("digits8x8-below-5", digits, _below_five),
]


@dataclass
class TaskFiles:
    name: str
    classes: list[str]
    delta: Path  # delta.safetensors
    merged: Path  # merged.safetensors: the whole fine-tuned state dict


@dataclass
class SwitchSetup:
    model: Classifier  # the resident base (eval mode, on the device)
    preprocess: Callable[[TaskData], Inputs]
    device: torch.device
    tasks: list[TaskFiles]
    sample: Tensor  # (1, ...) one model-ready input, for the predicts
    source: str  # what the model and the tasks are
    raw_sample: Tensor  # (C, H, W) uint8: the sample as a predict request sends it
    base: Optional[dict[str, Any]] = None  # base_model, model_options, seed: how the task server loads the base


def _digit_data(task: DigitTask, samples: int, seed: int) -> TaskData:
    data = task.load()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:samples].sort().values
    data = data.subset(order)
    labels, classes = task.grouping(data.y)
    return TaskData(data.kind, data.x, labels, classes)


def cpu_setup(workdir: Path, count: int, samples: int, image_size: int, seed: int, align_strength: float = 0.0,
              sparsity: str = "none") -> SwitchSetup:
    """`count` real tasks on MobileNetV2, adapted here unless the work directory already holds them. With
    `align_strength`, each task's mask prefers the blocks the earlier ones use; with `sparsity` "2:4", every
    task is pruned to the first task's 2:4 pattern (as the daemon shares one per base)."""
    options: dict[str, Any] = {"image_size": image_size}
    variant = (f"-aligned{align_strength:g}" if align_strength else "") + ("-2of4" if sparsity == "2:4" else "")
    tasks: list[TaskFiles] = []
    pattern: Optional[dict[str, Tensor]] = None
    for spec in DIGIT_TASKS[:count]:
        directory = workdir / f"{spec.name}-{samples}s-{image_size}px-seed{seed}{variant}"
        if not (directory / "merged.safetensors").exists():
            data = _digit_data(spec, samples, seed)
            loaded = load_model("mobilenet_v2", len(data.classes), seed=seed, **options)
            config = AdaptConfig(method="taskedge", budget=0.001, epochs=1, batch_size=32, seed=seed, device="cpu",
                                 calibration_samples=min(samples, 128), align_strength=align_strength,
                                 sparsity=sparsity, dense_reference=False)
            print(f"adapting {spec.name} ({len(data)} samples, {len(data.classes)} classes{variant})", flush=True)
            result = adapt(loaded.model, loaded.preprocess, data, config, shared_pattern=pattern,
                           aligned_blocks=_blocks_in_use(loaded.model, tasks) if align_strength and tasks else None)
            keep = result.pruning.keep_masks if result.pruning is not None else None
            write_outputs(result.model, result.adaptation, directory, config, "mobilenet_v2", keep)
            if keep is not None and pattern is None:
                pattern = keep
        elif sparsity == "2:4" and pattern is None:
            pattern = _pattern_of(directory / "delta.safetensors", load_model("mobilenet_v2", 2, **options).model)
        classes = spec.grouping(torch.arange(10))[1]
        tasks.append(TaskFiles(spec.name, classes, directory / "delta.safetensors", directory / "merged.safetensors"))
    base = load_model("mobilenet_v2", 2, seed=seed, **options)
    images = _digit_data(DIGIT_TASKS[0], 16, seed)
    sample = base.preprocess(images)
    assert isinstance(sample, Tensor) and isinstance(images.x, Tensor)  # images preprocess to one tensor
    return SwitchSetup(base.model.eval(), base.preprocess, torch.device("cpu"), tasks, sample[:1],
                       f"MobileNetV2 {image_size} px, taskedge 0.1 %{variant}, {samples} samples, 1 epoch", images.x[0],
                       {"base_model": "mobilenet_v2", "model_options": options, "seed": seed})


def _blocks_in_use(model: nn.Module, tasks: list[TaskFiles]) -> dict[str, Tensor]:
    """Layer -> the blocks the earlier tasks' deltas use (what the daemon aligns a job with)."""
    shapes = {name: t.shape for name, t in model.state_dict().items()}
    return union_blocks([{name: blocks_of(shapes[name], indices) for name, (indices, _) in
                          parse_delta(t.delta.read_bytes(), str(t.delta)).sparse.items()} for t in tasks])


def _pattern_of(path: Path, model: nn.Module) -> dict[str, Tensor]:
    """The 2:4 keep-masks of a task's delta, each shaped like its weight in `model`."""
    shapes = {name: t.shape for name, t in model.state_dict().items()}
    delta = parse_delta(path.read_bytes(), str(path))
    return {name: unpack_keep_mask(bits, shapes[name].numel()).reshape(shapes[name])
            for name, bits in delta.pruned.items()}


def _linear_weights(model: nn.Module) -> dict[str, nn.Linear]:
    """State-dict name of each backbone Linear's weight -> the layer."""
    return {f"{name}.weight": m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.startswith("backbone.")}


@torch.no_grad()
def _vit_delta(model: Classifier, budget: float, classes: int, generator: torch.Generator) -> dict[str, Tensor]:
    """One task's delta tensors in the `write_outputs` layout: per-neuron top-K masks, random values."""
    tensors = {}
    for name, layer in _linear_weights(model).items():
        out_features, in_features = layer.weight.shape  # (out, in)
        k = max(1, round(budget * in_features))
        columns = torch.rand(out_features, in_features, generator=generator).topk(k, dim=1).indices  # (out, K)
        flat = (torch.arange(out_features)[:, None] * in_features + columns).flatten().sort().values  # (out*K,)
        tensors[f"{name}::indices"] = flat
        tensors[f"{name}::values"] = torch.randn(flat.numel(), generator=generator) * 0.02
    head = nn.Linear(model.head.in_features, classes)
    tensors["head.weight::dense"] = head.weight.detach().clone()
    tensors["head.bias::dense"] = head.bias.detach().clone()
    return tensors


@torch.no_grad()
def _merged(model: Classifier, delta: dict[str, Tensor]) -> dict[str, Tensor]:
    state = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    for key, value in delta.items():
        name, _, part = key.rpartition("::")
        if part == "values":
            state[name].view(-1)[delta[f"{name}::indices"]] = value
        elif part == "dense":
            state[name] = value
    return state


def vit_setup(workdir: Path, count: int, full_checkpoints: int, device: torch.device, seed: int,
              budget: float = 0.001, classes: int = 10) -> SwitchSetup:
    """ViT-B/16 (timm when installed) and `count` tasks of real delta shape; only the first `full_checkpoints`
    tasks get a merged file (344 MB each), which the full-weight rows cycle through."""
    torch.manual_seed(seed)
    backbone, source = build_backbone(VIT_B16, prefer_timm=True)
    model = Classifier(backbone, VIT_B16.dim, classes, "image")
    tasks = []
    for index in range(count):
        directory = workdir / f"vit-b16-task{index}-seed{seed}"
        directory.mkdir(parents=True, exist_ok=True)
        delta = _vit_delta(model, budget, classes, torch.Generator().manual_seed(seed * 1000 + index))
        save_file(delta, str(directory / "delta.safetensors"))
        if index < full_checkpoints:
            save_file(_merged(model, delta), str(directory / "merged.safetensors"))
        tasks.append(TaskFiles(f"task{index}", [str(c) for c in range(classes)], directory / "delta.safetensors",
                               directory / "merged.safetensors"))
    raw = torch.randint(0, 256, (3, VIT_B16.image, VIT_B16.image), dtype=torch.uint8)  # (C, H, W), as a request sends
    sample = _vit_preprocess(TaskData("image", raw[None], torch.zeros(1, dtype=torch.int64), ["a", "b"], labelled=False))
    assert isinstance(sample, Tensor)  # images preprocess to one tensor
    return SwitchSetup(model.to(device).eval(), _vit_preprocess, device, tasks, sample.to(device),
                       f"ViT-B/16 ({source}), per-neuron top-K 0.1 % of every Linear, random values", raw)


def _vit_preprocess(data: TaskData) -> Inputs:
    assert isinstance(data.x, Tensor)  # images
    return preprocess_images(data.x, VIT_B16.image)


def state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())

"""One adaptation, in process: split -> preprocess -> calibrate -> score -> mask -> train -> evaluate -> merge."""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from edged.adapt.config import AdaptConfig
from edged.adapt.delta_file import save_delta
from edged.adapt.stage_cache import cached_calibration, cached_dense_reference, cached_masks
from edged.calibrate import CalibrationResult, calibrate
from edged.data.task import Inputs, TaskData, take
from edged.devices import resolve_device
from edged.errors import InvalidInput
from edged.methods import all_methods, get_method
from edged.methods.base import Adaptation, ScoreConfig, TaskBatches, backbone_layers
from edged.methods.sparse_delta import prepare_sparse, select_mask
from edged.methods.taskedge import importance
from edged.sparse.layers import count_weights
from edged.sparse.nm import PruneReport, check_2_4, prune_2_4_, recalibrate_batchnorm_
from edged.store.tensor_files import save_tensors_atomic
from edged.train.evaluate import accuracy, predict_logits
from edged.train.loop import TrainSettings, amp_dtype, train

ProgressCallback = Callable[[dict], None]


@dataclass
class AdaptResult:
    model: nn.Module  # merged: plain dense layers with the adaptation folded in
    adaptation: Adaptation
    metrics: dict
    calibration: Optional[CalibrationResult] = None
    history: list[dict] = field(default_factory=list)
    pruning: Optional[PruneReport] = None  # with sparsity 2:4: keep masks and the layers left dense


class StageClock:
    """Seconds per stage, reported to a progress callback as each stage starts and ends."""

    def __init__(self, on_progress: Optional[ProgressCallback]) -> None:
        self.seconds: dict[str, float] = {}
        self.on_progress = on_progress

    @contextmanager
    def stage(self, name: str):
        if self.on_progress:
            self.on_progress({"type": "stage", "stage": name, "status": "started"})
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        if self.on_progress:
            self.on_progress({"type": "stage", "stage": name, "status": "finished", "seconds": self.seconds[name]})


# Methods whose training keeps a 2:4 pattern: sparse deltas (masked inside the kept positions), and those
# that leave Linear/Conv2d weights alone.
PATTERN_KEEPING_ADAPTERS = ("head", "bn_bias")


def check_config(config: AdaptConfig) -> None:
    """Raise InvalidInput when the method does not exist or cannot honour the requested sparsity."""
    method = get_method(config.method)
    if config.sparsity == "2:4" and method.kind != "sparse" and method.name not in PATTERN_KEEPING_ADAPTERS:
        raise InvalidInput(
            f"sparsity '2:4' cannot be kept by method {method.name!r}: it writes dense updates into pruned weights",
            detail={"accepted": sorted([n for n, m in all_methods().items() if m.kind == "sparse"]
                                       + list(PATTERN_KEEPING_ADAPTERS))},
        )


@dataclass
class _Split:
    train_inputs: Inputs
    train_labels: Tensor
    val_inputs: Inputs
    val_labels: Tensor
    calib: TaskBatches


def _split(task: TaskData, preprocess: Callable, config: AdaptConfig, device: torch.device) -> _Split:
    train_task, val_task = task.split(config.val_fraction, config.seed)
    train_inputs, val_inputs = preprocess(train_task), preprocess(val_task)
    chosen = torch.randperm(len(train_task), generator=torch.Generator().manual_seed(config.seed))[: config.calibration_samples]
    calib = TaskBatches(take(train_inputs, chosen), train_task.y[chosen], config.batch_size, device)
    return _Split(train_inputs, train_task.y, val_inputs, val_task.y, calib)


def adapt(
    model: nn.Module,
    preprocess: Callable,
    task: TaskData,
    config: AdaptConfig,
    on_progress: Optional[ProgressCallback] = None,
    workdir: Optional[Path] = None,
) -> AdaptResult:
    """Adapt `model` (a Classifier whose head matches the task's classes) to `task`, in place.

    With sparsity '2:4' the backbone is pruned to 2:4 by task importance (|W| * ||X||_2, the same calibration
    pass) before training, BatchNorm statistics are re-estimated on the task data (pruning shifts every
    activation), and the trainable mask is restricted to the kept positions.
    """
    check_config(config)
    method = get_method(config.method)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    clock = StageClock(on_progress)
    with clock.stage("prepare"):
        data = _split(task, preprocess, config, device)
        model.to(device)
    dtype = amp_dtype(device, config.amp)
    eval_batch = max(config.batch_size, 64)
    with clock.stage("evaluate_before"):
        accuracy_before = accuracy(model, data.val_inputs, data.val_labels, eval_batch, device, dtype)
    accuracy_dense_adapted, teacher_logits = None, None
    if config.sparsity == "2:4" and config.dense_reference:
        with clock.stage("dense_reference"):
            accuracy_dense_adapted, teacher_logits = _dense_reference(
                model, preprocess, task, config, data, device, dtype, on_progress, workdir)
    calibration, pruning = None, None
    if method.name in ("taskedge", "taskedge_lora") or config.sparsity == "2:4":
        with clock.stage("calibrate"):
            calibration, _ = cached_calibration(workdir, lambda: calibrate(
                model, data.calib.inputs, backbone_layers(model), config.memory_budget_mb, device=device))
    recalibrated: list[str] = []
    if config.sparsity == "2:4":
        with clock.stage("prune"):
            assert calibration is not None  # calibrated above whenever sparsity is 2:4
            pruning = prune_2_4_(model, importance(model, calibration), backbone_layers(model))
            recalibrated = recalibrate_batchnorm_(model, data.calib)
        with clock.stage("evaluate_pruned"):
            accuracy_pruned = accuracy(model, data.val_inputs, data.val_labels, eval_batch, device, dtype)
    score_config = ScoreConfig(seed=config.seed, memory_budget_mb=config.memory_budget_mb, calibration=calibration)
    allowed = pruning.keep_masks if pruning else None
    adaptation = _prepare(method, model, data.calib, config, score_config, clock, workdir, allowed)
    adaptation.changed.update({name: None for name in recalibrated if name not in adaptation.changed})
    if pruning is not None:
        _add_pruned_entries_(adaptation.changed, pruning.keep_masks)
    result = _train(model, adaptation, data, config, method.default_lr, device, clock, on_progress, workdir,
                    teacher_logits)
    with clock.stage("merge"):
        adaptation.merge_()
    with clock.stage("evaluate"):
        accuracy_after = accuracy(model, data.val_inputs, data.val_labels, eval_batch, device, dtype)
    metrics = {
        "method": method.name, "accuracy_before": accuracy_before, "accuracy_after": accuracy_after,
        "best_val_accuracy": result.best_accuracy, **_budget_metrics(model, adaptation),
        "peak_memory_mb": result.peak_memory_mb,
        "calibration_peak_memory_mb": calibration.peak_memory_mb if calibration else None,
        "calibration_micro_batch": calibration.micro_batch if calibration else None,
        "samples_per_s": result.samples_per_s, "epochs_run": result.epochs_run,
        "train_samples": int(data.train_labels.shape[0]), "val_samples": int(data.val_labels.shape[0]),
        "device": str(device), "stage_seconds": clock.seconds,
    }
    if pruning is not None:
        metrics["sparsity"] = {
            **pruning.summary(), "pattern_holds": _pattern_holds(model, pruning),
            "accuracy_dense_adapted": accuracy_dense_adapted,  # None with dense_reference off
            "accuracy_pruned_no_recovery": accuracy_pruned,  # 2:4 by |W|*||X|| + BatchNorm re-estimated
            "accuracy_2_4_adapted": accuracy_after,
        }
    return AdaptResult(model, adaptation, metrics, calibration, result.history, pruning)


def _dense_reference(model: nn.Module, preprocess: Callable, task: TaskData, config: AdaptConfig, data: _Split,
                     device: torch.device, dtype, on_progress: Optional[ProgressCallback],
                     workdir: Optional[Path]) -> tuple[float, Optional[Tensor]]:
    """The same adaptation on an unpruned copy of `model`: its validation accuracy (what 2:4 is compared
    with) and, when distilling, its logits on the training samples (N, classes) as the recovery's teacher.
    Runs with its own RNG stream (the 2:4 run does not depend on it but through the teacher) and its own
    work dir, where its results are kept, so a resumed job does not train it again."""
    ref_dir = workdir / "dense_reference" if workdir else None

    def run() -> tuple[float, Optional[Tensor]]:
        dense_config = config.model_copy(update={"sparsity": "none", "dense_reference": False})
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            reference = adapt(copy.deepcopy(model), preprocess, task, dense_config, _reference_progress(on_progress), ref_dir)
        teacher = None
        if config.distill_weight > 0:
            teacher = predict_logits(reference.model, data.train_inputs, max(config.batch_size, 64), device, dtype)
        return float(reference.metrics["accuracy_after"]), teacher

    return cached_dense_reference(ref_dir, run)


def _reference_progress(on_progress: Optional[ProgressCallback]) -> Optional[ProgressCallback]:
    """The reference run's events for the job: epochs (and a step at most once a second, which also
    lets a cancel or a stop act) as `dense_reference_*`; its stages stay inside "dense_reference"."""
    if on_progress is None:
        return None
    last_step = [0.0]

    def forward(event: dict) -> None:
        if event["type"] == "stage":
            return
        if event["type"] == "step":
            if time.monotonic() - last_step[0] < 1.0:
                return
            last_step[0] = time.monotonic()
        on_progress({**event, "type": f"dense_reference_{event['type']}"})

    return forward


def _add_pruned_entries_(changed: dict[str, Optional[Tensor]], keep_masks: dict[str, Tensor]) -> None:
    """The zeros pruning wrote belong to the task's delta too, next to the trained entries."""
    for name, keep in keep_masks.items():
        if name in changed and changed[name] is None:
            continue  # already stored whole
        pruned = (~keep).flatten().nonzero().flatten().to(torch.int64)
        trained = changed.get(name)
        changed[name] = pruned if trained is None else torch.cat([pruned, trained.to(pruned.device)]).unique()


def _pattern_holds(model: nn.Module, pruning) -> bool:
    weights = dict(model.named_parameters())
    return all(check_2_4(weights[name].detach()) for name in pruning.pruned)


def _budget_metrics(model: nn.Module, adaptation: Adaptation) -> dict:
    backbone_total = count_weights(backbone_layers(model))
    return {"trainable_params": adaptation.entries, "trainable_fraction": adaptation.entries / backbone_total,
            "backbone_weights": backbone_total, "head_params": sum(p.numel() for p in model.get_submodule("head").parameters())}


def _train(model, adaptation: Adaptation, data: _Split, config: AdaptConfig, default_lr: float, device,
           clock: StageClock, on_progress, workdir: Optional[Path], teacher_logits: Optional[Tensor] = None):
    head_params = dict(model.head.named_parameters(prefix="head"))
    for p in head_params.values():
        p.requires_grad_(True)
    params = trainable_by_name(model, adaptation) | head_params
    settings = TrainSettings(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr or default_lr, head_lr=config.head_lr,
        weight_decay=config.weight_decay, schedule=config.schedule, warmup_fraction=config.warmup_fraction,
        patience=config.patience, seed=config.seed, amp=config.amp, train_norm_layers=adaptation.train_norm_layers,
        checkpoint_dir=workdir / "checkpoint" if workdir else None, distill_weight=config.distill_weight,
    )
    with clock.stage("train"):
        return train(model, params, set(head_params), (data.train_inputs, data.train_labels),
                     (data.val_inputs, data.val_labels), settings, device, on_progress, teacher_logits)


def trainable_by_name(model: nn.Module, adaptation: Adaptation) -> dict[str, nn.Parameter]:
    """The adaptation's tensors keyed by their name in `model` (e.g. `backbone.0.sparse_delta.values`):
    what checkpoints are keyed by, so each tensor comes back into its own layer whatever order the
    method lists them in."""
    names = {id(p): name for name, p in model.named_parameters()}
    unnamed = [tuple(p.shape) for p in adaptation.parameters if id(p) not in names]
    if unnamed:
        raise RuntimeError(f"method {adaptation.method!r} trains tensors that are not parameters of the model: {unnamed[:3]}")
    return {names[id(p)]: p for p in adaptation.parameters}


def _prepare(method, model, calib: TaskBatches, config: AdaptConfig, score_config: ScoreConfig,
             clock: StageClock, workdir: Optional[Path], allowed: Optional[dict[str, Tensor]] = None) -> Adaptation:
    if method.kind == "adapter":
        with clock.stage("prepare_method"):
            if method.name == "taskedge_lora":
                return method.function(model, calib, config, score_config)
            return method.function(model, calib, config)

    def score_and_mask() -> dict:
        with clock.stage("score"):
            scores = method.function(model, calib, score_config)
        with clock.stage("mask"):
            return select_mask(model, scores, config, allowed)

    weights = dict(model.named_parameters())
    shapes = {name: weights[name].shape for name in backbone_layers(model)}  # layers are named by their weight
    masks, _ = cached_masks(workdir, score_and_mask, shapes)
    return prepare_sparse(method.name, model, masks)


def write_outputs(result: AdaptResult, directory: Path, config: AdaptConfig, base_model: str) -> dict[str, Path]:
    """The delta (safetensors) and the merged model's state dict, written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = dict(result.adaptation.changed)
    changed.update({name: None for name in result.model.state_dict() if name.startswith("head.")})
    metadata = {"method": config.method, "budget": config.budget, "base_model": base_model,
                "trainable_entries": result.adaptation.entries, "config": config.model_dump()}
    delta = save_delta(directory / "delta.safetensors", result.model, changed, metadata)
    merged = save_tensors_atomic(directory / "merged.safetensors", result.model.state_dict(),
                                 {"base_model": base_model, "method": config.method})
    return {"delta": delta, "merged": merged}

"""The adaptation's stages, each `stage(run: AdaptRun) -> None`, in the order `edged.pipeline.stages` runs them:
prepare -> evaluate_before -> [dense_reference] -> [calibrate] -> [prune -> evaluate_pruned] ->
score -> mask | prepare_method -> train -> merge -> [reestimate_batchnorm] -> [refit_head] -> evaluate -> [int8_ranges].

With 2:4 the backbone is pruned by task importance (|W| * ||X||_2, the calibration pass), BatchNorm
statistics are re-estimated on the task data (pruning shifts every activation), and the trainable mask is
restricted to the kept positions, so training recovers what pruning cost without leaving the pattern.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from edged.calibrate import calibrate as calibration_pass
from edged.calibrate.ranges import PCTL
from edged.data.task import Inputs
from edged.methods.base import ScoreConfig, backbone_layers
from edged.methods.options import MaskOptions
from edged.methods.sparse_delta import prepare_sparse, select_mask
from edged.methods.taskedge import importance
from edged.pipeline.split import LabelledInputs, split_task
from edged.pipeline.stage_cache import cached_calibration, cached_search, load_masks, save_masks
from edged.pipeline.state import AdaptRun, made
from edged.sparse.blocks import aligned_scores
from edged.sparse.nm import prune_2_4_, recalibrate_batchnorm_
from edged.sparse.shared_pattern import apply_pattern_, pack_pattern, pattern_id
from edged.train.evaluate import accuracy
from edged.train.batchnorm_stats import has_batchnorm, reestimate_batchnorm_
from edged.train.head_fit import HeadFitSettings, fit_head_
from edged.train.loop import TrainResult, TrainSettings, amp_dtype, job_graphed_step, train
from edged.train.memory_plan import TrainingPlan, plan_training, unbudgeted_plan
from edged.train.lr_search import BUDGET_FRACTION, DEFAULT_HEAD_LR, candidate_grid, search_learning_rates


def prepare(run: AdaptRun) -> None:
    """The run's RNG stream starts here, at its seed; the split, made once for every later stage (a dense
    reference reuses its job's); the model on the device; the mask a sparse method already chose, when the
    work dir of an interrupted run holds it (then the score stage is skipped)."""
    config, model = run.config, made(run.model, "validate")
    torch.manual_seed(config.seed)
    if run.split is None:
        run.split = split_task(made(run.task, "validate"), made(run.preprocess, "validate"), config.val_fraction,
                               config.seed, config.calibration_samples, config.batch_size, run.device, run.test_task)
    model.to(run.device)
    run.amp_dtype = amp_dtype(run.device, config.amp)
    if run.method.kind == "sparse":
        run.masks = load_masks(run.workdir, _backbone_shapes(model))


def _val_accuracy(run: AdaptRun) -> float:
    return _accuracy_on(run, made(run.split, "prepare").val)


def _test_accuracy(run: AdaptRun) -> Optional[float]:
    """Accuracy on the held-out test set, None without one."""
    test = made(run.split, "prepare").test
    return None if test is None else _accuracy_on(run, test)


def _accuracy_on(run: AdaptRun, data: LabelledInputs) -> float:
    return accuracy(made(run.model, "validate"), data.inputs, data.labels, run.eval_batch, run.device, run.amp_dtype)


def evaluate_before(run: AdaptRun) -> None:
    run.accuracy_before = _val_accuracy(run)
    run.test_accuracy_before = _test_accuracy(run)


def calibrate(run: AdaptRun) -> None:
    """||X_j||_2 of every backbone layer's inputs over the calibration subset, within the memory budget."""
    model, calib = made(run.model, "validate"), made(run.split, "prepare").calib
    run.calibration, _ = cached_calibration(run.workdir, lambda: calibration_pass(
        model, calib.inputs, backbone_layers(model), run.config.memory_budget_mb, device=run.device,
        on_samples=run.stage_progress))


def prune(run: AdaptRun) -> None:
    """2:4 by task importance (Wanda's metric), or to the base's shared pattern when there is one and the job
    shares it; then BatchNorm statistics re-estimated on the task data. The mask stage keeps training inside
    the kept positions either way, so a shared pattern's zeros stay zeros."""
    model = made(run.model, "validate")
    layers = backbone_layers(model)
    if run.shared_pattern is not None and run.config.share_2_4:
        run.pruning = apply_pattern_(model, run.shared_pattern, layers)
        run.pruning.shared = True
    else:
        run.pruning = prune_2_4_(model, importance(model, made(run.calibration, "calibrate")), layers)
    run.pruning.pattern_id = pattern_id(pack_pattern(run.pruning.keep_masks))
    run.recalibrated = recalibrate_batchnorm_(model, made(run.split, "prepare").calib)


def evaluate_pruned(run: AdaptRun) -> None:
    run.accuracy_pruned = _val_accuracy(run)


def _backbone_shapes(model: nn.Module) -> dict[str, torch.Size]:
    weights = dict(model.named_parameters())
    return {name: weights[name].shape for name in backbone_layers(model)}  # layers are named by their weight


def score(run: AdaptRun) -> None:
    """Importance scores of a sparse method, shaped like each backbone weight."""
    score_config = ScoreConfig(seed=run.config.seed, memory_budget_mb=run.config.memory_budget_mb,
                               calibration=run.calibration)
    run.scores = run.method.function(made(run.model, "validate"), made(run.split, "prepare").calib, score_config)


def mask(run: AdaptRun) -> None:
    """The budgeted trainable mask (inside the 2:4 kept positions when pruned), kept in the work dir (unless it
    came from there), and its entries as the sparse-delta parameters training updates."""
    model = made(run.model, "validate")
    if run.masks is None:
        options = run.method.options_for(run.config)
        assert isinstance(options, MaskOptions)  # every sparse method reads MaskOptions (registry.register_scorer)
        allowed = run.pruning.keep_masks if run.pruning else None
        scores, own = made(run.scores, "score"), None
        if run.aligned_blocks and run.config.align_strength > 0:
            own, scores = scores, aligned_scores(scores, run.aligned_blocks, run.config.align_strength)
        run.masks = select_mask(model, scores, options, allowed, shares_from=own)
        save_masks(run.workdir, run.masks)
    run.adaptation = prepare_sparse(run.method.name, model, run.masks)


def prepare_method(run: AdaptRun) -> None:
    """An adapter's trainable part (head, LoRA, ...), prepared with its own options."""
    options = run.method.options_for(run.config)
    calibration = run.calibration if run.method.needs_calibration else None
    run.adaptation = run.method.function(made(run.model, "validate"), made(run.split, "prepare").calib, options,
                                         calibration)


def train_stage(run: AdaptRun) -> Optional[int]:
    """Trains the adaptation and the head, at the learning rates the job gives or the search chooses; returns
    the samples this run trained on (its epochs only: a resumed job's earlier epochs were counted by the run they
    ran in). A method that trains no backbone part fits the head on features the frozen backbone computes once
    (`edged.train.head_fit`)."""
    config, model, split = run.config, made(run.model, "validate"), made(run.split, "prepare")
    adaptation = made(run.adaptation, "mask or prepare_method")
    checkpoint_dir = run.workdir / "checkpoint" if run.workdir else None
    if not run.method.trains_backbone:
        run.training = _fit_head(run, checkpoint_dir, run.on_progress)
        return len(split.train)
    if config.head_warmup:  # LP-FT: the sparse entries then train under a head that already fits the features
        warmup = _fit_head(run, run.workdir / "head_warmup" if run.workdir else None, _warmup_events(run))
        run.head_warmup = warmup.history[0]
    head_params = dict(model.get_submodule("head").named_parameters(prefix="head"))
    for p in head_params.values():
        p.requires_grad_(True)
    params = trainable_by_name(model, adaptation.method, adaptation.parameters) | head_params
    settings = TrainSettings(
        epochs=config.epochs, batch_size=config.batch_size, lr=_given_rate(config.lr, run.method.default_lr),
        head_lr=_given_rate(config.head_lr, DEFAULT_HEAD_LR), weight_decay=config.weight_decay,
        schedule=config.schedule, warmup_fraction=config.warmup_fraction, patience=config.patience, seed=config.seed,
        amp=config.amp, train_norm_layers=adaptation.train_norm_layers, distill_weight=config.distill_weight,
        checkpoint_dir=checkpoint_dir, cuda_graph=config.cuda_graph,
    )
    train_data = (split.train.inputs, split.train.labels)
    run.training_plan = _training_plan(run, params, train_data, settings)
    settings = run.training_plan.applied_to(settings)
    shared_step = job_graphed_step(model, params, settings, run.device, len(split.train), run.teacher_logits is not None)
    if "auto" in (config.lr, config.head_lr):
        refit = refits_head(run)  # the search then scores what the job will report: a refit head's accuracy
        run.lr_search, run.lr_search_ran = cached_search(run.workdir, lambda: search_learning_rates(
            model, params, set(head_params), train_data, settings,
            candidate_grid(settings.lr, settings.head_lr, config.lr == "auto", config.head_lr == "auto", refit),
            run.device, _trial_events(run), refit_head=refit, shared_step=shared_step,
            time_fraction=BUDGET_FRACTION if shared_step is not None else None).summary())
        settings = replace(settings, lr=run.lr_search["lr"], head_lr=run.lr_search["head_lr"])
    run.training = train(model, params, set(head_params), train_data, (split.val.inputs, split.val.labels),
                         settings, run.device, run.on_progress, run.teacher_logits, shared_step)
    if run.lr_search is not None and run.lr_search_ran and shared_step is not None:
        # training captured: the setup steps the trials ran now have their excess
        run.lr_search["graph_setup_s"] = shared_step.setup_s(until=run.lr_search["graph_setup_steps"])
    return len(split.train) * len(run.training.history)


def _training_plan(run: AdaptRun, params: dict[str, nn.Parameter], train_data: tuple[Inputs, Tensor],
                   settings: TrainSettings) -> TrainingPlan:
    """The recomputation policy and micro-batch measured to keep training (the learning-rate search's trials
    too) inside the job's own memory budget; without one, none and the whole batch."""
    budget = run.config.training_memory_budget_mb
    if budget is None:
        return unbudgeted_plan(settings)
    return plan_training(made(run.model, "validate"), params, train_data, settings, run.device, budget)


def _fit_head(run: AdaptRun, checkpoint_dir: Optional[Path], on_progress: Optional[Callable[[dict], None]]
              ) -> TrainResult:
    """The head fit on the frozen backbone's cached features (a linear probe); kept in `checkpoint_dir`."""
    config, model, split = run.config, made(run.model, "validate"), made(run.split, "prepare")
    fit_settings = HeadFitSettings(config.seed, run.eval_batch, run.amp_dtype, config.distill_weight,
                                   checkpoint_dir=checkpoint_dir)
    return fit_head_(model, split.train.inputs, split.train.labels, split.val.inputs, split.val.labels,
                     fit_settings, run.device, on_progress, run.teacher_logits)


def _warmup_events(run: AdaptRun) -> Optional[Callable[[dict], None]]:
    """The head warm-up's step and epoch events as `head_warmup_*` (training's own epochs follow)."""
    on_progress = run.on_progress
    return None if on_progress is None else lambda event: on_progress({**event, "type": f"head_warmup_{event['type']}"})


def _given_rate(value: Union[float, str, None], default: float) -> float:
    """A job's learning rate as a number: its own, else the default (also where 'auto' starts searching)."""
    return value if isinstance(value, float) else default


def _trial_events(run: AdaptRun) -> Optional[Callable[[dict], None]]:
    """Each search trial as an `lr_trial` event (which also lets a cancel or a stop act between trials)."""
    on_progress = run.on_progress
    return None if on_progress is None else lambda trial: on_progress({"type": "lr_trial", **trial})


def trainable_by_name(model: nn.Module, method: str, parameters: list[nn.Parameter]) -> dict[str, nn.Parameter]:
    """The adaptation's tensors keyed by their name in `model` (e.g. `backbone.0.sparse_delta.values`):
    what checkpoints are keyed by, so each tensor comes back into its own layer whatever order the
    method lists them in."""
    names = {id(p): name for name, p in model.named_parameters()}
    unnamed = [tuple(p.shape) for p in parameters if id(p) not in names]
    if unnamed:
        raise RuntimeError(f"method {method!r} trains tensors that are not parameters of the model: {unnamed[:3]}")
    return {names[id(p)]: p for p in parameters}


def merge(run: AdaptRun) -> None:
    """Folds the adaptation into plain dense layers; the delta also carries the re-estimated BatchNorm statistics
    (and, written by the export, the 2:4 keep-masks: the zeros pruning wrote)."""
    adaptation = made(run.adaptation, "mask or prepare_method")
    adaptation.merge_()
    adaptation.changed.update({name: None for name in run.recalibrated if name not in adaptation.changed})


def reestimates_batchnorm(run: AdaptRun) -> bool:
    """The adaptation trained a model with BatchNorm in train mode (full, BatchNorm + head): its weights learned
    under batch statistics, which the running ones only trail. A method that trains under frozen statistics
    (sparse, LoRA) keeps them: re-estimated after taskedge on MobileNetV2/MNIST they scored 21.5 % on the
    training samples against 72.9 % (README: BatchNorm statistics)."""
    if run.adaptation is None:  # asked before the method is prepared (the job's progress plan): it is not known
        return False
    return run.config.reestimate_batchnorm and run.adaptation.train_norm_layers and \
        has_batchnorm(made(run.model, "validate"))


def reestimate_batchnorm(run: AdaptRun) -> None:
    """BatchNorm statistics re-estimated on the calibration samples (training samples), kept where they score
    at least as well on them as the statistics training left (`edged.train.batchnorm_stats`); when kept,
    the buffers travel with the task's delta."""
    model, calib = made(run.model, "validate"), made(run.split, "prepare").calib
    adaptation = made(run.adaptation, "mask or prepare_method")
    run.batchnorm = reestimate_batchnorm_(model, calib, len(calib.labels), lambda: accuracy(
        model, calib.inputs, calib.labels, run.eval_batch, run.device, run.amp_dtype))
    if run.batchnorm.kept:
        adaptation.changed.update({name: None for name in run.batchnorm.buffers if name not in adaptation.changed})


def refits_head(run: AdaptRun) -> bool:
    """A method that trained a backbone part, with the job's `refit_head` on ('head' fits its head this way)."""
    return run.config.refit_head and run.method.trains_backbone


def refit_head(run: AdaptRun) -> None:
    """The head refit as a linear probe on the adapted backbone's features (`edged.train.head_fit`: L-BFGS, weight
    decay chosen on part of the training samples). The head AdamW trained beside the backbone part in a few epochs
    is far from its optimum on small jobs: on 1,000 8x8 digits, 2 epochs, 3 seeds, refitting lifted taskedge 0.1 %
    from 82.5 to 91.7 % and LoRA r=8 from 90.7 to 95.0 % (README, `edged bench adapt`). The validation accuracy
    with the trained head (scored by the fit on the validation features it computes anyway) is recorded beside the
    refit's, only to report what the refit changed."""
    fit = _fit_head(run, run.workdir / "head_refit" if run.workdir else None, None).history[0]
    run.head_refit = {"val_accuracy_trained_head": fit["val_accuracy_head_before"], "val_accuracy": fit["val_accuracy"],
                      "weight_decay": fit["weight_decay"], "train_loss": fit["train_loss"]}


def evaluate(run: AdaptRun) -> None:
    run.accuracy_after = _val_accuracy(run)
    run.test_accuracy_after = _test_accuracy(run)


def int8_ranges(run: AdaptRun) -> None:
    """Input ranges of every backbone layer re-measured on the adapted model by one more calibration pass (same
    samples, same memory budget): training, pruning and BatchNorm re-estimation move the inputs of every later
    layer, so the first pass's ranges are stale (README: INT8). How far they moved is kept per job, where the
    method or 2:4 made a first pass (a method that does not calibrate is not given one only for this)."""
    model, calib = made(run.model, "validate"), made(run.split, "prepare").calib
    run.int8_ranges = calibration_pass(model, calib.inputs, backbone_layers(model), run.config.memory_budget_mb,
                                       device=run.device, on_samples=run.stage_progress).ranges
    run.int8_drift = range_drift(run.calibration.ranges, run.int8_ranges) if run.calibration else None


def range_drift(before: dict[str, Tensor], after: dict[str, Tensor]) -> dict[str, float]:
    """How the layers' 99.99th-percentile input ranges moved from `before` to `after`: ratios after / before."""
    ratios = torch.tensor([float(after[n][PCTL] / before[n][PCTL]) for n in after if n in before and before[n][PCTL] > 0])
    if ratios.numel() == 0:
        return {}
    return {"layers": ratios.numel(), "ratio_min": float(ratios.min()), "ratio_median": float(ratios.median()),
            "ratio_max": float(ratios.max())}

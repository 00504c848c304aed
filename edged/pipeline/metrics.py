"""The job's metrics, assembled once from what the stages made (`jobs.metrics`, `adapt()`'s result)."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from edged.methods.base import Adaptation, backbone_layers
from edged.pipeline.state import AdaptRun, JobRun, made
from edged.sparse.layers import count_weights
from edged.sparse.blocks import blocks_of_mask, count_blocks, union_blocks
from edged.sparse.nm import PruneReport, check_2_4


def adapt_metrics(run: AdaptRun) -> dict[str, Any]:
    """Accuracy before/after, the budget used, memory, rate, the data's sizes, seconds per stage, and with
    2:4 the `sparsity` block (what pruning cost and what training recovered)."""
    model, split = made(run.model, "validate"), made(run.split, "prepare")
    training, calibration = made(run.training, "train"), run.calibration
    metrics: dict[str, Any] = {
        "method": run.method.name, "accuracy_before": run.accuracy_before, "accuracy_after": run.accuracy_after,
        "best_val_accuracy": training.best_accuracy,
        **_budget_metrics(model, made(run.adaptation, "mask or prepare_method")),
        "peak_memory_mb": training.peak_memory_mb,
        "calibration_peak_memory_mb": calibration.peak_memory_mb if calibration else None,
        "calibration_micro_batch": calibration.micro_batch if calibration else None,
        "samples_per_s": training.samples_per_s, "epochs_run": training.epochs_run,
        "train_cuda_graph": training.cuda_graph,
        "train_samples": len(split.train), "val_samples": len(split.val),
        "device": str(run.device), "stage_seconds": dict(run.timer.seconds),
        "batchnorm_reestimated": run.batchnorm.summary() if run.batchnorm else None,
        "training_memory": run.training_plan.summary() if run.training_plan else None,
    }
    if run.head_warmup is not None:
        metrics["head_warmup"] = run.head_warmup
    if run.head_refit is not None:
        metrics["head_refit"] = run.head_refit
    if run.lr_search is not None:
        metrics["lr_search"] = {**run.lr_search, "fraction_of_train_time": _search_share(run)}
    if split.test is not None:  # the held-out test set: reported only, never trained or selected on
        metrics.update(test_accuracy_before=run.test_accuracy_before, test_accuracy_after=run.test_accuracy_after,
                       test_samples=len(split.test))
    if run.aligned_blocks is not None and run.masks is not None:
        metrics["alignment"] = alignment_metrics(run.masks, run.aligned_blocks)
    if run.pruning is not None:
        metrics["sparsity"] = {
            **run.pruning.summary(), "pattern_holds": _pattern_holds(model, run.pruning),
            "accuracy_dense_adapted": run.accuracy_dense_adapted,  # None with dense_reference off
            "accuracy_pruned_no_recovery": run.accuracy_pruned,  # 2:4 by |W|*||X|| + BatchNorm re-estimated
            "accuracy_2_4_adapted": run.accuracy_after,
        }
    return metrics


def job_metrics(run: JobRun) -> dict[str, Any]:
    """adapt()'s metrics, the model's options, latency in the dashboard's shape, the 2:4 and compile results
    at the top level (where the dashboard and the README's table read them)."""
    metrics = {**adapt_metrics(run), **made(run.latency, "benchmark"),
               "model_options": made(run.model_info, "validate").options}
    if "sparsity" in metrics:
        metrics["accuracy_2_4_adapted"] = metrics["sparsity"]["accuracy_2_4_adapted"]
    if run.compile_metrics is not None:
        metrics["compile"] = run.compile_metrics
        metrics["accuracy_compiled"] = run.compile_metrics["accuracy"]
        metrics["compiled_max_abs_logit_diff"] = run.compile_metrics["max_abs_logit_diff"]
    return metrics


def alignment_metrics(masks: dict[str, Tensor], used: dict[str, Tensor]) -> dict[str, Any]:
    """The task's blocks, how many of them earlier tasks already use, and the union's growth."""
    mine = {name: blocks_of_mask(mask) for name, mask in masks.items()}
    shared = sum(int((blocks & used[name]).sum()) for name, blocks in mine.items() if name in used)
    before = count_blocks(used)
    return {"blocks": count_blocks(mine), "shared_blocks": shared, "union_blocks_before": before,
            "union_blocks_after": count_blocks(union_blocks([used, mine]))}


def _search_share(run: AdaptRun) -> Optional[float]:
    """What the search added to the job, over what training alone would have taken: its seconds less the excess of
    the shared graph's setup steps its trials ran, which training then skipped (`graph_setup_s`), over the
    training's (train stage minus the search) plus that setup. None for a resumed job's cached search: this process
    did not run it."""
    if not run.lr_search_ran:
        return None
    search = made(run.lr_search, "train")
    setup = search.get("graph_setup_s", 0.0)
    train_s = run.timer.seconds.get("train", 0.0) - search["seconds"] + setup
    return (search["seconds"] - setup) / train_s if train_s > 0 else None


def _pattern_holds(model: nn.Module, pruning: PruneReport) -> bool:
    weights = dict(model.named_parameters())
    return all(check_2_4(weights[name].detach()) for name in pruning.pruned)


def _budget_metrics(model: nn.Module, adaptation: Adaptation) -> dict[str, Any]:
    backbone_total = count_weights(backbone_layers(model))
    return {"trainable_params": adaptation.entries, "trainable_fraction": adaptation.entries / backbone_total,
            "backbone_weights": backbone_total,
            "head_params": sum(p.numel() for p in model.get_submodule("head").parameters())}

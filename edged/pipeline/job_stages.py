"""The stages only a job has, around the adaptation's: load its inputs (validate), store its outputs
(export), compile and benchmark the adapted model, and assemble its metrics (record).

A job hands its store in as callables on the JobRun (`load_task`, `store_artifact`): the pipeline never
writes the jobs tables itself.
"""

from __future__ import annotations

import shutil

import torch

from edged.methods.base import backbone_layers
from edged.models.loader import load_model
from edged.pipeline.benchmark import benchmark_latency
from edged.pipeline.compile_stage import compile_merged, store_compiled_artifacts
from edged.pipeline.metrics import job_metrics
from edged.pipeline.outputs import write_outputs
from edged.pipeline.state import JobRun, made
from edged.sparse.shared_pattern import pack_pattern

ARTIFACT_NAMES = {"delta": "delta.safetensors", "merged": "merged.safetensors", "pattern": "pattern_2_4.safetensors"}
OPAQUE = "application/octet-stream"


def validate(run: JobRun) -> None:
    """The job's dataset (read and verified from the store), its held-out test set in the dataset's class order
    where it has one, and its model, built for the task's classes."""
    task = made(run.load_task, "the job")()
    loaded = load_model(run.model_spec, len(task.classes), seed=run.config.seed, sources=run.model_sources,
                        **run.model_options)
    run.task, run.model, run.preprocess, run.model_info = task, loaded.model, loaded.preprocess, loaded.info
    test = run.load_test_task() if run.load_test_task is not None else None
    run.test_task = None if test is None else test.relabelled(task.classes)  # labels in the training classes' order
    if run.config.align_strength > 0 and run.load_aligned_blocks is not None:
        weights = dict(loaded.model.named_parameters())
        run.aligned_blocks = run.load_aligned_blocks({name: weights[name].shape for name in backbone_layers(loaded.model)})
    if run.config.prunes_2_4 and run.config.share_2_4 and run.load_pattern is not None:
        run.shared_pattern = run.load_pattern()


def export(run: JobRun) -> None:
    """delta.safetensors and merged.safetensors (and with 2:4 the pattern), stored as the job's artifacts."""
    workdir, store = made(run.workdir, "the job"), made(run.store_artifact, "the job")
    keep_masks = run.pruning.keep_masks if run.pruning is not None else None
    paths = write_outputs(made(run.model, "validate"), made(run.adaptation, "mask or prepare_method"),
                          workdir / "outputs", run.config, base_model=run.model_spec, keep_masks=keep_masks)
    if run.pruning is not None:  # the keep-masks, bit-packed: what a base's shared pattern is made from
        paths["pattern"] = workdir / "outputs" / ARTIFACT_NAMES["pattern"]
        paths["pattern"].write_bytes(pack_pattern(run.pruning.keep_masks))  # stored as a blob (atomic) at once
    for key, path in paths.items():
        store(ARTIFACT_NAMES[key], path, OPAQUE)


def compile_stage(run: JobRun) -> None:
    """The merged model through the job's compile backend; every file it writes becomes an artifact."""
    out_dir = made(run.workdir, "the job") / "compiled"
    shutil.rmtree(out_dir, ignore_errors=True)  # a resumed job compiles afresh, leaving no stale files
    run.compiled, metrics = compile_merged(made(run.model, "validate"), made(run.split, "prepare").val,
                                           run.compile_backend, out_dir, run.config.batch_size, run.int8_ranges,
                                           run.stage_progress)
    if run.int8_ranges is not None:
        metrics["int8"] = {"accuracy_int8": metrics["accuracy"], "accuracy_fp32": metrics["accuracy_pytorch_cpu"],
                           "ranges": "re-measured on the adapted model", "range_drift": run.int8_drift}
    metrics["artifacts"] = store_compiled_artifacts(made(run.store_artifact, "the job"), out_dir)
    run.compile_metrics = metrics


def benchmark(run: JobRun) -> None:
    """Latency and energy per inference of the merged model, and of the compiled one, on one validation batch."""
    batch = made(run.split, "prepare").val.batch(run.config.batch_size)
    run.latency = benchmark_latency(made(run.model, "validate"), run.compiled, batch, torch.device(run.device),
                                    made(run.timer.source, "the job's timer"))


def record(run: JobRun) -> None:
    run.metrics = job_metrics(run)

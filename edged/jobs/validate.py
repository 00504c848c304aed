"""A job request checked before it is queued: the body's fields, the method and model registries, the
dataset and whether its kind fits the model. Every problem is collected, then raised as one 422.

Registered models and transformers directories are checked cheaply (by name, by path); a user factory is
built and its weights file's keys and shapes are checked against it (`edged.models.user_shapes` caches what
that reads), so a checkpoint that does not fit is a 422 naming the keys and the fix, not a failed job. The
route runs in FastAPI's thread pool (a plain `def`), so a slow factory does not hold up the event loop. The
worker loads the model again, with the sources of the settings it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import sqlite_utils
from pydantic import ValidationError

from edged.compile.registry import AUTO_ORDER, INT8_BACKENDS
from edged.data.preprocess import check_image_size
from edged.errors import InvalidInput, NotFound, quoted
from edged.jobs.schemas import JobCreate
from edged.models import user, user_shapes, weight_keys
from edged.models.registry import list_models
from edged.models.sources import FACTORIES_SETTING, MODELS_DIR_SETTING, ModelSources
from edged.models.weight_keys import OPTION, Shape
from edged.pipeline.config import AdaptConfig, JobConfig, JobFields, ModelOptions
from edged.settings import Settings
from edged.store.datasets import get_dataset

COMPILE_CHOICES = ("none", "auto", *AUTO_ORDER)
# model option -> the kind of model taking it (token selection needs a text encoder's attention)
OPTION_KINDS = {"image_size": "image", "max_length": "text", "token_keep": "text", "token_layer": "text"}


def checked_job(db: sqlite_utils.Database, body: Any, settings: Settings) -> tuple[JobCreate, JobConfig]:
    """(the request, the config the job runs with), or InvalidInput listing every reason. The request's own
    fields (the method and 2:4 checks among them) are checked by JobCreate; the model, the dataset and
    whether their kinds fit, here."""
    reasons: list[dict[str, Any]] = []
    job: Optional[JobCreate] = None
    try:
        job = JobCreate.model_validate(body)
    except ValidationError as exc:
        reasons += [_reason(e["loc"], _message(e), e["type"]) for e in exc.errors()]
    fields = body if isinstance(body, dict) else {}
    _check_compile(fields.get("compile", "none"), reasons)
    _check_quantize(fields.get("quantize", "none"), fields.get("compile", "none"), reasons)
    _check_token_compile(fields.get("token_keep"), fields.get("compile", "none"), reasons)
    model_kind = _model_kind(fields.get("model"), _drop_prefixes(fields), ModelSources.from_settings(settings), reasons)
    dataset = _dataset(db, fields.get("dataset"), "dataset", reasons)
    dataset_kind = dataset["kind"] if dataset else None
    _check_test_dataset(db, dataset, fields.get("test_dataset"), reasons)
    _check_kinds(fields, model_kind, dataset_kind, reasons)
    _check_image_size(fields.get("image_size"), reasons)
    if job is not None and not reasons:
        return job, job_config(job, settings, dataset_kind)
    summary = "; ".join(f"{'.'.join(map(str, r['loc'][1:]))}: {r['msg']}" for r in reasons)
    raise InvalidInput(f"job rejected: {summary}", detail=reasons)


def job_config(job: JobCreate, settings: Settings, dataset_kind: Optional[str]) -> JobConfig:
    """What the worker runs: the request's job fields with the daemon's device and default memory budget (and
    the job's own budget, if it set one, for training too),
    the model's options, the compile choice."""
    fields = job.model_dump(include=set(JobFields.model_fields))
    fields["memory_budget_mb"] = job.memory_budget_mb or settings.default_memory_budget_mb
    # Training is held to a budget the job sets itself; the daemon's default bounds calibration only.
    fields["training_memory_budget_mb"] = job.memory_budget_mb
    # Options left at their defaults are left out (an empty drop_weight_keys among them), so the stored options,
    # which name a task's resident base, stay those of earlier jobs on the same model.
    options = job.model_dump(include=set(ModelOptions.model_fields), exclude_defaults=True)
    if user.is_factory_spec(job.model) and job.model not in _registered():
        options["kind"] = dataset_kind  # a user factory takes the dataset's kind (image or tabular)
    return JobConfig(adapt=AdaptConfig(**fields, device=settings.device), model_options=options, compile=job.compile,
                     publish=job.publish, test_dataset=job.test_dataset)


def _message(error: Any) -> str:
    """pydantic's message; a validator's own words without pydantic's 'Value error, ' in front."""
    return str(error["ctx"]["error"]) if error["type"] == "value_error" and "error" in error.get("ctx", {}) else error["msg"]


def _reason(loc: Any, msg: str, type_: str, detail: Any = None) -> dict[str, Any]:
    """One problem: where, what, its kind, and (for a weights file) the keys concerned."""
    reason = {"loc": ["body", *loc] if isinstance(loc, (list, tuple)) else ["body", loc], "msg": msg, "type": type_}
    return {**reason, "detail": detail} if detail is not None else reason


def _check_compile(backend: Any, reasons: list[dict[str, Any]]) -> None:
    if isinstance(backend, str) and backend not in COMPILE_CHOICES:
        reasons.append(_reason("compile", f"unknown compile backend {backend!r}; accepted: "
                               f"{', '.join(COMPILE_CHOICES)}", "unknown"))


def _check_quantize(quantize: Any, backend: Any, reasons: list[dict[str, Any]]) -> None:
    """INT8 lives in the compiled model only (training and the published task stay float), so it needs a
    backend that runs the QDQ graph."""
    if quantize == "int8" and isinstance(backend, str) and backend not in ("auto", *INT8_BACKENDS):
        reasons.append(_reason("quantize", f"quantize 'int8' runs in the compiled model and compile {backend!r} "
                               f"does not run INT8; accepted: compile {', '.join(repr(b) for b in ('auto', *INT8_BACKENDS))} "
                               "with quantize 'int8', or quantize 'none'", "not_applicable"))


def _check_token_compile(token_keep: Any, backend: Any, reasons: list[dict[str, Any]]) -> None:
    """Token selection keeps a number of tokens that follows each text's length: the exported graphs carry no
    such step, so a job with it runs and serves in eager PyTorch."""
    if token_keep is not None and backend != "none":
        reasons.append(_reason("compile", f"token_keep runs in eager PyTorch only and compile {backend!r} exports a "
                               "graph without it; accepted: compile 'none' with token_keep, or no token_keep",
                               "not_applicable"))


def _registered() -> dict[str, Any]:
    return {info.name: info for info in list_models()}


def _drop_prefixes(fields: dict[str, Any]) -> Optional[list[str]]:
    """The request's drop_weight_keys ([] when absent), or None when it is not a list of strings (JobCreate says why)."""
    prefixes = fields.get(OPTION, [])
    return prefixes if isinstance(prefixes, list) and all(isinstance(p, str) for p in prefixes) else None


def _model_kind(spec: Any, drop_prefixes: Optional[list[str]], sources: ModelSources,
                reasons: list[dict[str, Any]]) -> Optional[str]:
    """The kind of data the model takes ('factory' when it follows the dataset), or None after a reason."""
    if not isinstance(spec, str):
        return None
    registered = _registered()
    match = user.FACTORY_SPEC.match(spec) if spec not in registered else None
    if drop_prefixes and (match is None or not match["weights"]):
        reasons.append(_reason(OPTION, f"{OPTION} applies to 'package.module:factory=weights' models (it drops keys "
                               f"of their weights file), not to model {quoted(spec)}", "not_applicable"))
    if spec in registered:
        info = registered[spec]
        if not info.available:
            reasons.append(_reason("model", f"model {spec!r} cannot run here: {info.reason}", "unavailable"))
        return info.kind
    if user.is_factory_spec(spec):
        return _check_factory(spec, drop_prefixes, sources, reasons)
    try:
        if sources.resolve_path(spec).is_dir():
            return "text"
    except InvalidInput as exc:
        reasons.append(_reason("model", exc.message, "not_allowed"))
        return None
    reasons.append(_reason("model", f"no model {quoted(spec)}: accepted are the registered models "
                           f"({', '.join(registered)}), 'package.module:factory[=weights]' allowed by "
                           f"{FACTORIES_SETTING}, or a transformers directory inside {MODELS_DIR_SETTING} "
                           f"({sources.models_dir})", "unknown"))
    return None


def _check_factory(spec: str, drop_prefixes: Optional[list[str]], sources: ModelSources,
                   reasons: list[dict[str, Any]]) -> Optional[str]:
    """The factory must be allow-listed, importable and build a backbone; its weights file must be inside the
    models directory and, after `drop_prefixes`, fit the backbone key for key and shape for shape."""
    match = user.FACTORY_SPEC.match(spec)
    assert match is not None
    weights = _weights_file(match["weights"], sources, reasons) if match["weights"] else None
    try:
        sources.check_factory(match["module"], match["factory"])
    except InvalidInput as exc:
        reasons.append(_reason("model", exc.message, "not_allowed"))
        return "factory"  # code off the allow-list is not run
    try:
        expected, given = user_shapes.model_shapes(match["module"], match["factory"], weights)
    except NotFound as exc:
        reasons.append(_reason("model", exc.message, "unknown"))
    except InvalidInput as exc:
        reasons.append(_reason("model", exc.message, "invalid", exc.detail))
    else:
        if given is not None and weights is not None and drop_prefixes is not None:
            _check_weight_keys(expected, given, drop_prefixes, weights.name, reasons)
    return "factory"


def _weights_file(given: str, sources: ModelSources, reasons: list[dict[str, Any]]) -> Optional[Path]:
    """The factory's weights file, or None after a reason (outside the models directory, or not a file)."""
    try:
        weights = sources.resolve_path(given)
    except InvalidInput as exc:
        reasons.append(_reason("model", exc.message, "not_allowed"))
        return None
    if not weights.is_file():
        reasons.append(_reason("model", f"weights file {quoted(given)} of the model is not "
                               f"a file in {MODELS_DIR_SETTING} ({sources.models_dir})", "not_found"))
        return None
    return weights


def _check_weight_keys(expected: Mapping[str, Shape], given: Mapping[str, Shape], drop_prefixes: list[str],
                       file_name: str, reasons: list[dict[str, Any]]) -> None:
    """The loader's own checks (`edged.models.weight_keys`), on shapes: prefixes first, then the keys left."""
    try:
        kept = weight_keys.drop_keys(given, drop_prefixes, expected, file_name)
    except InvalidInput as exc:
        reasons.append(_reason(OPTION, exc.message, "invalid", exc.detail))
        return
    try:
        weight_keys.check_match(expected, kept, file_name)
    except InvalidInput as exc:
        reasons.append(_reason("model", exc.message, "weights_mismatch", exc.detail))


def _check_image_size(image_size: Any, reasons: list[dict[str, Any]]) -> None:
    if isinstance(image_size, int):
        try:
            check_image_size(image_size)
        except InvalidInput as exc:
            reasons.append(_reason("image_size", exc.message, "out_of_range"))


def _dataset(db: sqlite_utils.Database, dataset_id: Any, field: str,
             reasons: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The stored dataset's row, or None (after a reason when `dataset_id` names none)."""
    if not isinstance(dataset_id, str):
        return None
    try:
        return get_dataset(db, dataset_id)
    except NotFound:
        reasons.append(_reason(field, f"no dataset with id {dataset_id!r}; upload one with POST /v1/datasets",
                               "not_found"))
        return None


def _check_test_dataset(db: sqlite_utils.Database, dataset: Optional[dict[str, Any]], test_id: Any,
                        reasons: list[dict[str, Any]]) -> None:
    """A held-out test set must be another dataset of the same kind (and feature count), whose classes are
    among the training dataset's: its labels are matched to them by name."""
    test = _dataset(db, test_id, "test_dataset", reasons)
    if test is None or dataset is None:
        return
    if test["id"] == dataset["id"]:
        reasons.append(_reason("test_dataset", "test_dataset is the training dataset itself, so it would not be "
                               "held out; upload the held-out samples as their own dataset", "not_held_out"))
    elif test["kind"] != dataset["kind"]:
        reasons.append(_reason("test_dataset", f"test_dataset holds {test['kind']} data, the dataset "
                               f"{dataset['kind']}; accepted: a dataset of {dataset['kind']} data", "kind_mismatch"))
    elif test["kind"] == "tabular" and test["shape"] != dataset["shape"]:
        reasons.append(_reason("test_dataset", f"test_dataset has {test['shape'][0]} features per sample, the "
                               f"dataset {dataset['shape'][0]}", "shape_mismatch"))
    else:
        unknown = [name for name in test["classes"] if name not in dataset["classes"]]
        if unknown:
            reasons.append(_reason("test_dataset", f"test_dataset has classes the dataset lacks: "
                                   f"{', '.join(map(repr, unknown[:10]))}; accepted: classes among "
                                   f"{', '.join(map(repr, dataset['classes'][:20]))} (matched by name)",
                                   "class_mismatch"))


def _check_kinds(fields: dict[str, Any], model_kind: Optional[str], dataset_kind: Optional[str],
                 reasons: list[dict[str, Any]]) -> None:
    if model_kind == "factory":
        if dataset_kind == "text":
            reasons.append(_reason("dataset", "a module:factory model takes image or tabular data, "
                                   "the dataset is text", "kind_mismatch"))
        model_kind = dataset_kind if dataset_kind in user.FACTORY_KINDS else None
    elif model_kind and dataset_kind and model_kind != dataset_kind:
        reasons.append(_reason("dataset", f"model {fields.get('model')!r} takes {model_kind} data, "
                               f"the dataset is {dataset_kind}", "kind_mismatch"))
    for option, kind in OPTION_KINDS.items():
        if fields.get(option) is not None and model_kind is not None and model_kind != kind:
            reasons.append(_reason(option, f"{option} applies to {kind} models; this model takes {model_kind} data",
                                   "not_applicable"))

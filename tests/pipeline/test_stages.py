"""The stage list, the stage timer and the one job config: properties that hold whatever the stages do."""

from __future__ import annotations

import pytest
import torch

from suite_settings import TEST_TOKEN

from edged.jobs.schemas import JobCreate
from edged.jobs.validate import job_config
from edged.pipeline.config import AdaptConfig, JobConfig, JobFields, ModelOptions
from edged.methods import get_method
from edged.pipeline.stages import ADAPT_STAGES, STAGES, progress_plan
from edged.pipeline.state import JobRun
from edged.pipeline.timer import StageTimer
from edged.settings import get_settings
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.sources import open_named_source


def _plan(**fields) -> dict[str, tuple[float, float]]:
    config = AdaptConfig(method="taskedge", **fields)
    run = JobRun(config, get_method("taskedge"), torch.device("cpu"), StageTimer(), compile_backend="onnxruntime")
    return progress_plan(run, STAGES)


def test_the_progress_plan_tiles_the_bar_in_stage_order():
    assert len({stage.name for stage in STAGES}) == len(STAGES)
    plan = _plan(sparsity="2:4")
    assert list(plan) == [stage.name for stage in STAGES if stage.name in plan]  # the stage order
    spans = list(plan.values())
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(1.0, abs=1e-3)
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))  # contiguous, each moves the bar
    assert {"dense_reference", "calibrate", "prune", "compile"} <= set(plan) and "int8_ranges" not in plan


def test_a_dense_reference_gets_a_span_as_long_as_the_recovery_training():
    with_reference, without = _plan(sparsity="2:4"), _plan(sparsity="2:4", dense_reference=False)
    reference, train = (with_reference[name][1] - with_reference[name][0] for name in ("dense_reference", "train"))
    assert reference == pytest.approx(train, abs=1e-3) and reference > 0.3  # the two trainings share the bar
    assert "dense_reference" not in without and without["train"][1] - without["train"][0] > 0.5


def test_adapt_runs_every_stage_but_the_job_only_ones_in_the_same_order():
    assert [s.name for s in ADAPT_STAGES] == [s.name for s in STAGES if s.name not in
                                              {"validate", "export", "compile", "benchmark", "record"}]


def _non_default(name: str, value: object) -> object:
    """A valid value for JobFields' field `name` that differs from its default."""
    if isinstance(value, bool):
        return not value
    if name == "method":
        return "random"
    if name == "sparsity":
        return "2:4"
    if name == "quantize":
        return "int8"
    if value is None:
        return 0.5
    if value == "auto":  # learning rates: a number instead of the search
        return 0.01
    return value * 2 if isinstance(value, int) else value / 2  # float fields: halved stays in bounds


def test_every_job_field_reaches_the_config_the_worker_runs(tmp_path):
    """Adding a job field is one line in JobFields: the request schema and the stored config follow."""
    assert set(JobCreate.model_fields) == set(JobFields.model_fields) | set(ModelOptions.model_fields) | {
        "model", "dataset", "compile", "publish", "test_dataset"}
    body = {name: _non_default(name, field.default) for name, field in JobFields.model_fields.items()}
    job = JobCreate.model_validate({**body, "model": "mobilenet_v2", "dataset": "d", "image_size": 64})
    settings = get_settings(data_dir=tmp_path, token=TEST_TOKEN, device="cpu")
    config = job_config(job, settings, "image")
    stored = JobConfig.model_validate_json(config.model_dump_json())  # as the worker reads it back
    assert stored == config
    assert {name: getattr(stored.adapt, name) for name in body} == body
    assert stored.adapt.device == "cpu" and stored.model_options == {"image_size": 64}


def test_memory_budget_defaults_to_the_daemons_setting(tmp_path):
    settings = get_settings(data_dir=tmp_path, token=TEST_TOKEN, default_memory_budget_mb=123.0)
    job = JobCreate(model="mobilenet_v2", dataset="d")
    assert job_config(job, settings, "image").adapt.memory_budget_mb == 123.0


def test_only_a_jobs_own_memory_budget_holds_its_training(tmp_path):
    settings = get_settings(data_dir=tmp_path, token=TEST_TOKEN, default_memory_budget_mb=123.0)
    unset = job_config(JobCreate(model="mobilenet_v2", dataset="d"), settings, "image").adapt
    own = job_config(JobCreate(model="mobilenet_v2", dataset="d", memory_budget_mb=500.0), settings, "image").adapt
    assert unset.training_memory_budget_mb is None and own.training_memory_budget_mb == own.memory_budget_mb == 500.0


def test_the_2_4_rule_comes_from_the_method_registry():
    with pytest.raises(ValueError, match="cannot be kept by method 'full'"):
        AdaptConfig(method="full", sparsity="2:4")
    assert AdaptConfig(method="bn_bias", sparsity="2:4").prunes_2_4


def test_the_timer_reports_measures_and_records_a_stage_that_raised():
    events, rows = [], []
    source = open_named_source("none", TelemetryConfig())  # what a job without power sensors meters through
    timer = StageTimer(events.append, source, lambda *row: rows.append(row))
    with timer.stage("calibrate") as count:
        count.items = 7
    with pytest.raises(RuntimeError), timer.stage("train"):
        raise RuntimeError("boom")
    assert [(e["stage"], e["status"]) for e in events] == [("calibrate", "started"), ("calibrate", "finished"),
                                                            ("train", "started")]
    assert [(name, items) for name, _, _, items in rows] == [("calibrate", 7), ("train", None)]
    assert list(timer.seconds) == ["calibrate"]  # a stage that raised has a row, but no seconds in the metrics
    assert rows[0][1].seconds == pytest.approx(timer.seconds["calibrate"], abs=1e-3)
    assert all(measurement.peak_host_mb > 0 for _, measurement, _, _ in rows)


def test_without_a_source_stages_are_only_timed():
    timer = StageTimer()
    with timer.stage("prepare"):
        torch.zeros(1)
    assert set(timer.seconds) == {"prepare"}

"""2:4 tasks compiled with cusparselt: on CUDA the tasks of one base and one 2:4 pattern are served through ONE
compiled model, a switch recompressing what the two deltas touch into the buffers the captured CUDA graph reads;
without CUDA they serve eager on the resident base (tests/tasks/test_compiled.py checks that route)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import pytest
import torch

from daemon import TEST_MODEL_DIR
from suite_settings import TEST_FACTORIES
from tasks_helpers import mnist_sample
from edged.compile.semi_structured import probe as cusparselt_probe
from edged.data.task import TaskData
from edged.models.loader import load_model
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig
from edged.pipeline.outputs import write_outputs
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import migrate, open_db
from edged.tasks.compiled_2_4 import TaskLayers
from edged.tasks.delta import parse_delta
from edged.tasks.inputs import Samples
from edged.tasks.server import TaskServer

MODEL = "edged_jobs_test_model:same_shape_mlp"  # six Linear(192, 192): every one takes 2:4 and cuSPARSELt
OPTIONS = {"image_size": 16}
CUSPARSELT_OK, CUSPARSELT_WHY = cusparselt_probe()


@pytest.fixture(scope="module")
def two_2_4_tasks(tmp_path_factory):
    """Two real 2:4 adaptations of one base: digits (its pattern becomes the base's) and parity pruned to it."""
    sys.path.insert(0, str(TEST_MODEL_DIR))
    x, y = mnist_sample(300, seed=1)
    images, tasks, pattern = torch.from_numpy(x)[:, None], {}, None
    config = AdaptConfig(method="taskedge", sparsity="2:4", dense_reference=False, budget=0.01, epochs=1,
                         batch_size=32, lr=0.03, device="cpu")
    try:
        for name, labels, classes in (("digits", y, [str(d) for d in range(10)]), ("parity", y % 2, ["even", "odd"])):
            loaded = load_model(MODEL, len(classes), seed=0, **OPTIONS)
            data = TaskData("image", images, torch.from_numpy(labels).long(), classes)
            result = adapt(loaded.model, loaded.preprocess, data, config, shared_pattern=pattern)
            assert result.pruning is not None
            pattern = pattern or result.pruning.keep_masks
            paths = write_outputs(result.model, result.adaptation, tmp_path_factory.mktemp(name), config, MODEL,
                                  result.pruning.keep_masks)
            tasks[name] = {"classes": classes, "delta": paths["delta"], "merged": result.model.eval()}
        batch = images[:8]
        inputs = loaded.preprocess(TaskData("image", batch, torch.zeros(8, dtype=torch.int64), ["a", "b"],
                                            labelled=False))
        yield tasks, batch, inputs
    finally:
        sys.path.remove(str(TEST_MODEL_DIR))


def _layers(tasks: dict, name: str) -> TaskLayers:
    return TaskLayers.of(parse_delta(tasks[name]["delta"].read_bytes(), name))


def test_a_switch_between_tasks_of_one_pattern_rewrites_what_their_deltas_write_and_no_pattern(two_2_4_tasks):
    tasks, _, _ = two_2_4_tasks
    digits, parity = _layers(tasks, "digits"), _layers(tasks, "parity")
    assert digits.pattern and digits.pattern == parity.pattern  # one shared 2:4 pattern, layer by layer
    assert set(parity.changed_from(digits)) == digits.written | parity.written
    assert not any(name.startswith("head.") for name in parity.changed_from(digits))  # the head is swapped whole
    own = TaskLayers(parity.written, {name: "another pattern" for name in parity.pattern})
    assert set(own.changed_from(digits)) == digits.written | parity.written | set(parity.pattern)


@pytest.mark.gpu
@pytest.mark.skipif(not CUSPARSELT_OK, reason=CUSPARSELT_WHY)
def test_cusparselt_tasks_on_one_base_share_one_compiled_model_that_switches_in_place(two_2_4_tasks, tmp_path):
    from edged.compile.cusparselt_lib import KernelConfig
    from edged.compile.semi_structured import SemiSparseLinear, max_rel_error
    from edged.compile.sparse_tuning import LayerChoice

    tasks, images, inputs = two_2_4_tasks
    settings = Settings(data_dir=tmp_path / "data", device="cuda", model_factories=TEST_FACTORIES,
                        predict_max_wait_ms=0)
    migrate(open_db(settings.db_path))
    blobs = BlobStore(settings.blobs_dir)
    pruned = sorted(_layers(tasks, "digits").pattern)
    # The choices a cusparselt compile writes into its plan, every 2:4 Linear on cuSPARSELt's default kernel: the
    # backend's own tuning keeps layers this small dense (not faster there), which would leave nothing to recompress.
    choices = {name: asdict(LayerChoice(len(images), None, None, KernelConfig(), True, "the test's plan"))
               for name in pruned}
    plan = tmp_path / "cusparselt_plan.json"
    plan.write_text(json.dumps({"backend": "cusparselt", "details": {"choices": choices}}))
    rows = {name: {"id": name, "kind": "image", "classes": task["classes"], "delta_blob": blobs.put_file(task["delta"]),
                   "base_model": MODEL, "model_options": OPTIONS, "seed": 0, "compiled_backend": "cusparselt",
                   "compiled_artifact": plan.name, "compiled_blob": blobs.put_file(plan)} for name, task in tasks.items()}
    server = TaskServer(settings, blobs)
    server.start()
    seen = []
    try:
        for name in ("digits", "parity", "digits", "parity"):
            body = server.submit(rows[name], Samples("image", list(images)), 1, True).result(timeout=300)
            assert body["backend"] == "cusparselt", body["backend_reason"]
            with torch.no_grad():
                expected = tasks[name]["merged"](inputs)  # the task's merged model, CPU fp32
            assert max_rel_error(torch.tensor(body["logits"]), expected) <= 2e-2, name  # fp16 tolerance
            (compiled,) = server._compiled_2_4.values()  # one compiled model for the base
            buffers = {n: m.compressed.data for n, m in compiled.backbone.named_modules() if isinstance(m, SemiSparseLinear)}
            seen.append((compiled, buffers, {n: b.clone() for n, b in buffers.items()}, len(compiled.runner.graphs)))
    finally:
        server.stop()
    first, buffers, values, graphs = seen[0]
    assert len(buffers) == len(pruned) and graphs == 1  # every 2:4 Linear on cuSPARSELt, the backbone graphed
    for compiled, now, _, count in seen[1:]:
        assert compiled is first and count == 1  # the same model; the graph captured for digits replays parity
        assert all(now[name] is buffers[name] for name in now)  # recompressed into the same buffers
    assert any(not torch.equal(values[name], seen[1][2][name]) for name in values)  # parity's values went in
    assert all(torch.equal(values[name], seen[2][2][name]) for name in values)  # and digits' came back, exactly


def test_a_forgotten_task_leaves_no_bookkeeping_behind(two_2_4_tasks, tmp_path):
    """A daemon runs for months while tasks come and go: what it counted per task goes when the task does."""
    tasks, images, _ = two_2_4_tasks
    settings = Settings(data_dir=tmp_path / "data", device="cpu", model_factories=TEST_FACTORIES, predict_max_wait_ms=0)
    migrate(open_db(settings.db_path))
    blobs = BlobStore(settings.blobs_dir)
    rows = {name: {"id": name, "kind": "image", "classes": task["classes"], "delta_blob": blobs.put_file(task["delta"]),
                   "base_model": MODEL, "model_options": OPTIONS, "seed": 0} for name, task in tasks.items()}
    server = TaskServer(settings, blobs)
    server.start()
    try:
        for name in ("digits", "parity", "digits"):
            server.submit(rows[name], Samples("image", list(images)), 1, False).result(timeout=120)
        assert "parity" in server._company and any("parity" in pair for pair in server._transitions)
        server.forget("parity").result(timeout=30)
        assert "parity" not in server._company and not any("parity" in pair for pair in server._transitions)
        assert server._company["digits"] == 1 and server._transitions[("parity", "digits")] == 0
        assert server.submit(rows["digits"], Samples("image", list(images)), 1, False).result(timeout=120)["task"] == "digits"
    finally:
        server.stop()

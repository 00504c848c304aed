"""The compiled-artifact cache of the task server, with real onnxruntime sessions of a small exported model: the byte
budget holds, the least recently used session goes first, a session answers what the ONNX file does, and a
missing or corrupt artifact is refused naming the task and the artifact, with nothing stored changed."""

from __future__ import annotations

import pytest
import torch

from edged.compile.onnx_export import OnnxRunner, export_onnx
from edged.errors import Corrupt, Unavailable
from edged.store.blobs import BlobStore
from edged.tasks.compiled import CompiledCache, load_runner, runtime_probe, serving_route
from tiny_model import tiny_classifier

INPUTS = torch.rand(5, 3, 16, 16)  # tiny_classifier takes 16 x 16 images


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Three different small models as ONNX files (seeds 0, 1, 2), and the models."""
    out = tmp_path_factory.mktemp("onnx")
    models = [tiny_classifier(seed=seed).eval() for seed in range(3)]
    return [(export_onnx(model, INPUTS, out / f"model{seed}.onnx"), model) for seed, model in enumerate(models)]


def _task(task_id: str, blobs: BlobStore, path, backend: str = "onnxruntime") -> dict:
    return {"id": task_id, "compiled_backend": backend, "compiled_artifact": path.name,
            "compiled_blob": blobs.put_file(path)}


def test_sessions_stay_within_the_byte_budget_least_recently_used_first(tmp_path, exported):
    blobs = BlobStore(tmp_path / "blobs")
    tasks = [_task(f"t{i}", blobs, path) for i, (path, _) in enumerate(exported)]
    sizes = [path.stat().st_size for path, _ in exported]
    cache = CompiledCache(sizes[0] + sizes[1] + sizes[2] // 2, lambda task: load_runner(task, blobs, 1))  # room for two
    for task in tasks[:2]:
        cache.get(task)
    cache.get(tasks[0])  # t0 is now the most recently used: t1 goes first
    assert cache.loads == 2
    cache.get(tasks[2])
    assert "t0" in cache and "t2" in cache and "t1" not in cache
    assert cache.bytes == sizes[0] + sizes[2] <= cache.budget_bytes and cache.loads == 3
    cache.get(tasks[1])  # loaded again, and t0 (least recent now) goes
    assert "t1" in cache and "t0" not in cache and cache.loads == 4
    cache.drop("t1")
    assert cache.stats() == {"entries": 1, "bytes": sizes[2], "budget_bytes": cache.budget_bytes, "loads": 4}


def test_a_session_answers_what_its_onnx_file_and_its_model_do(tmp_path, exported):
    blobs = BlobStore(tmp_path / "blobs")
    cache = CompiledCache(2**30, lambda task: load_runner(task, blobs, 1))
    for i, (path, model) in enumerate(exported):
        runner = cache.get(_task(f"t{i}", blobs, path))
        got = runner.logits(INPUTS)  # (5, 10)
        assert runner.backend == "onnxruntime" and got.dtype == torch.float32
        assert torch.equal(got, OnnxRunner(path, threads=1)(INPUTS))  # the same file, the same session options
        with torch.no_grad():
            assert torch.allclose(got, model(INPUTS), atol=1e-4)  # and the model it was exported from
    with pytest.raises(RuntimeError, match="onnxruntime"):  # a shape the graph refuses: the request's 422 upstream
        runner.logits(torch.rand(2, 3, 16))
    with pytest.raises(RuntimeError, match="inputs lack"):  # and edged's own errors too, never into the thread
        runner.logits({"input_ids": torch.zeros(2, 4, dtype=torch.int64)})


def test_an_artifact_larger_than_the_budget_answers_but_is_not_kept(tmp_path, exported):
    blobs = BlobStore(tmp_path / "blobs")
    path, model = exported[0]
    cache = CompiledCache(path.stat().st_size - 1, lambda task: load_runner(task, blobs, 1))
    runner = cache.get(_task("big", blobs, path))
    assert torch.equal(runner.logits(INPUTS), OnnxRunner(path, threads=1)(INPUTS))
    assert len(cache) == 0 and cache.bytes == 0


def test_a_missing_or_corrupt_artifact_is_refused_naming_task_and_artifact(tmp_path, exported):
    blobs = BlobStore(tmp_path / "blobs")
    path, _ = exported[0]
    task = _task("t0", blobs, path)
    stored = blobs.path(task["compiled_blob"])
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    with pytest.raises(Corrupt, match="task t0's compiled artifact model0.onnx .* is corrupt") as corrupt:
        load_runner(task, blobs, 1)
    assert corrupt.value.detail["problem"] == "sha256 mismatch" and corrupt.value.detail["artifact"] == "model0.onnx"
    assert stored.read_bytes() == bytes(damaged)  # refused, not repaired or removed
    stored.unlink()
    with pytest.raises(Corrupt, match="task t0's compiled artifact model0.onnx .* is missing"):
        load_runner(task, blobs, 1)


def test_the_route_names_the_backend_that_answers():
    assert serving_route({"id": "a", "compiled_backend": None}, "cpu").backend == "eager"
    onnx = serving_route({"id": "b", "compiled_backend": "onnxruntime"}, "cpu")
    assert onnx.backend == "onnxruntime" and onnx.reason is None  # onnxruntime is installed with edged
    sparse = serving_route({"id": "c", "compiled_backend": "cusparselt"}, "cpu")
    assert sparse.backend == "eager" and "CUDA GPU" in sparse.reason and "resident base" in sparse.reason
    on_gpu = serving_route({"id": "c", "compiled_backend": "cusparselt"}, "auto")
    usable, why = runtime_probe("cusparselt")
    assert on_gpu.backend == ("cusparselt" if usable and torch.cuda.is_available() else "eager")
    engine = serving_route({"id": "d", "compiled_backend": "tensorrt"}, "cpu")
    usable, why = runtime_probe("tensorrt")
    assert engine.backend == ("tensorrt" if usable else "eager")
    if not usable:
        assert why in engine.reason and "served eager" in engine.reason


def test_without_tensorrt_an_engine_task_is_refused_clearly(tmp_path, exported):
    if runtime_probe("tensorrt")[0]:
        pytest.skip("TensorRT runs here: the engine path is tested with a real engine (tests/compile, marker tensorrt)")
    blobs = BlobStore(tmp_path / "blobs")
    path, _ = exported[0]
    task = _task("trt", blobs, path, backend="tensorrt")  # bytes that TensorRT never gets to read here
    with pytest.raises(Unavailable, match="task trt's compiled artifact model0.onnx \\(tensorrt\\) cannot be loaded"):
        load_runner(task, blobs, 1)

"""The resident base: a task switch writes its delta in place and the next one restores it, bit for bit."""

from __future__ import annotations

import pytest
import torch

from tiny_model import tiny_classifier
from edged.data.preprocess import preprocess_images
from edged.errors import Corrupt
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig
from edged.pipeline.outputs import write_outputs
from edged.tasks.cache import DeltaCache
from edged.tasks.delta import parse_delta
from edged.tasks.resident import ResidentModel


def _preprocess(task):
    return preprocess_images(task.x, image_size=16)


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory):
    """Two real adaptations of one base: 10 digit classes (taskedge), and even/odd (bn_bias: norm statistics)."""
    from edged.data.bundled import mnist_5k

    task = mnist_5k().subset(torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:400])
    parity = type(task)("image", task.x, task.y % 2, ["even", "odd"])
    out = {}
    for name, data, method in (("digits", task, "taskedge"), ("parity", parity, "bn_bias")):
        config = AdaptConfig(method=method, epochs=1, batch_size=32, budget=0.01, lr=3e-2, device="cpu")
        result = adapt(tiny_classifier(len(data.classes)), _preprocess, data, config)
        paths = write_outputs(result.model, result.adaptation, tmp_path_factory.mktemp(name), config, "tiny")
        out[name] = (result.model.eval(), parse_delta(paths["delta"].read_bytes(), name))
    return out, _preprocess(task)[:16]


def test_each_task_on_the_resident_base_is_its_merged_model_bit_for_bit(two_tasks):
    tasks, x = two_tasks
    base = tiny_classifier(2).eval()
    original = {name: t.clone() for name, t in base.state_dict().items() if not name.startswith("head.")}
    resident = ResidentModel(base, _preprocess, torch.device("cpu"))
    for name in ("digits", "parity", "digits", "parity"):
        merged, delta = tasks[name]
        cost = resident.activate_(name, resident.place(delta, name))
        assert cost.bytes_moved > 0 and cost.seconds >= 0
        assert torch.equal(resident.logits(x), merged(x))
        for key, value in merged.state_dict().items():
            assert torch.equal(base.state_dict()[key], value), key
    assert resident.activate_("parity", resident.place(tasks["parity"][1], "parity")).bytes_moved == 0  # active
    resident.deactivate_()
    for name, value in base.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(value, original[name]), name  # the base is back, bit for bit


def test_a_switch_moves_the_entries_of_the_two_tasks_not_the_model(two_tasks):
    tasks, _ = two_tasks
    resident = ResidentModel(tiny_classifier(2).eval(), _preprocess, torch.device("cpu"))
    digits = resident.place(tasks["digits"][1], "digits")
    resident.activate_("digits", digits)
    moved = resident.activate_("parity", resident.place(tasks["parity"][1], "parity")).bytes_moved
    model_bytes = sum(t.numel() * t.element_size() for t in resident.model.state_dict().values())
    assert moved < model_bytes  # restoring digits' entries + writing parity's, not a reload
    assert digits.nbytes < model_bytes


def test_a_file_that_is_not_a_delta_is_refused():
    with pytest.raises(Corrupt, match="not a readable delta"):
        parse_delta(b"not safetensors", "upload")


def test_the_cache_evicts_the_least_recently_used_past_its_budget(two_tasks):
    tasks, _ = two_tasks
    resident = ResidentModel(tiny_classifier(2).eval(), _preprocess, torch.device("cpu"))
    digits, parity = (resident.place(tasks[name][1], name) for name in ("digits", "parity"))
    cache = DeltaCache(budget_bytes=2 * digits.nbytes + parity.nbytes - 1)  # room for two of the three
    cache.put("digits", digits)
    cache.put("parity", parity, prefetched=True)
    assert cache.get("parity") == (parity, "prefetched") and cache.get("digits") == (digits, "hot")
    cache.put("digits-again", digits)  # over budget: parity (least recently used) goes
    assert "parity" not in cache and "digits" in cache
    assert cache.get("parity") == (None, "cold")
    assert (cache.stats.hits, cache.stats.misses, cache.stats.prefetched, cache.stats.prefetch_used) == (2, 1, 1, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_on_cuda_a_task_is_its_merged_model_and_the_base_comes_back(two_tasks):
    tasks, x = two_tasks
    device = torch.device("cuda")
    base = tiny_classifier(2).eval().to(device)
    original = {name: t.clone() for name, t in base.state_dict().items() if not name.startswith("head.")}
    resident = ResidentModel(base, _preprocess, device)
    for name in ("digits", "parity", "digits"):
        merged, delta = tasks[name]
        cost = resident.activate_(name, resident.place(delta, name))
        assert cost.bytes_moved > 0
        expected = merged.to(device)(x.to(device)).float().cpu()
        torch.testing.assert_close(resident.logits(x), expected, rtol=1e-3, atol=1e-3)  # fp16-level tolerance
        merged.cpu()
    resident.deactivate_()
    for name, value in base.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(value, original[name]), name

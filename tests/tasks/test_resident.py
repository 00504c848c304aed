"""The resident base: a task switch writes its delta in place and the next one restores it, bit for bit."""

from __future__ import annotations

import gc

import pytest
import torch

from tiny_model import tiny_classifier
from edged.data.preprocess import preprocess_images
from edged.errors import Corrupt
from edged.pipeline.adapt import adapt
from edged.pipeline.config import AdaptConfig
from edged.pipeline.outputs import write_outputs
from edged.tasks.cache import DeltaCache
from edged.sparse.nm import nm_keep_mask
from edged.sparse.shared_pattern import pack_keep_mask
from edged.tasks.delta import TaskDelta, parse_delta
from edged.tasks.indices import BlockIndices
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


@pytest.mark.parametrize("index_format", ["blocks", "smaller"])
def test_block_wise_placement_writes_exactly_what_the_flat_format_writes(two_tasks, index_format):
    tasks, x = two_tasks
    flat = ResidentModel(tiny_classifier(2).eval(), _preprocess, torch.device("cpu"), index_format="flat")
    blocks = ResidentModel(tiny_classifier(2).eval(), _preprocess, torch.device("cpu"), index_format=index_format)
    for name in ("digits", "parity", "digits"):
        _, delta = tasks[name]
        flat.activate_(name, flat.place(delta, name))
        blocks.activate_(name, blocks.place(delta, name))
        for key, value in flat.model.state_dict().items():
            assert torch.equal(blocks.model.state_dict()[key], value), key
        assert torch.equal(blocks.logits(x), flat.logits(x))


def _pattern_delta(delta: TaskDelta, keep: dict[str, torch.Tensor], shift: float) -> TaskDelta:
    """`delta` with a 2:4 pattern (`keep`: weight -> bool keep-mask) and its values moved by `shift`."""
    sparse = {n: (i, v + shift) for n, (i, v) in delta.sparse.items() if n not in keep}
    return TaskDelta(sparse, delta.dense, delta.head, {n: pack_keep_mask(k) for n, k in keep.items()})


def test_tasks_that_share_a_2_4_pattern_share_its_zeros_and_a_switch_leaves_them_in_place(two_tasks):
    tasks, x = two_tasks
    base = tiny_classifier(2).eval()
    original = {n: t.clone() for n, t in base.state_dict().items() if not n.startswith("head.")}
    keep = {"backbone.3.weight": nm_keep_mask(base.get_parameter("backbone.3.weight").abs()),
            "backbone.9.weight": nm_keep_mask(base.get_parameter("backbone.9.weight").abs())}
    first, second = (_pattern_delta(tasks["digits"][1], keep, s) for s in (0.0, 0.5))
    resident = ResidentModel(base, _preprocess, torch.device("cpu"))
    placed = [resident.place(first, "first"), resident.place(second, "second")]
    assert placed[0].zeros[torch.float32] is placed[1].zeros[torch.float32]  # one list for the pattern
    zeros = placed[0].zeros[torch.float32]
    assert isinstance(zeros, BlockIndices) and zeros.nbytes * 2 == zeros.decode().numel()  # 4 bytes a block of 8
    resident.activate_("first", placed[0])
    moved = resident.activate_("second", placed[1]).bytes_moved
    written, values = placed[1].writes[torch.float32]
    restored = placed[0].writes[torch.float32][1].numel() * 4
    head = sum(p.numel() * p.element_size() for p in placed[1].head.parameters())
    assert moved == restored + written.nbytes + values.numel() * 4 + head  # no zeroed entry moved
    merged = ResidentModel(tiny_classifier(2).eval(), _preprocess, torch.device("cpu"))
    merged.activate_("second", merged.place(second, "second"))  # the second task on a fresh base
    for key, value in merged.model.state_dict().items():
        assert torch.equal(base.state_dict()[key], value), key
    resident.deactivate_()
    assert all(torch.equal(base.state_dict()[n], t) for n, t in original.items())
    del placed, zeros
    gc.collect()
    assert len(resident.flat._zeros) == 0  # the deleted tasks' blocks are freed with them


def test_a_switch_between_aligned_tasks_restores_only_the_entries_the_incoming_task_does_not_write(two_tasks):
    tasks, x = two_tasks
    digits = tasks["digits"][1]
    aligned = TaskDelta({n: (i, v * 2) for n, (i, v) in digits.sparse.items()}, {}, tasks["parity"][1].head)
    name, (indices, values) = next(iter(digits.sparse.items()))
    aligned.sparse[name] = (indices[: len(indices) // 2], values[: len(indices) // 2] * 2)  # half of one layer's
    skip = ResidentModel(tiny_classifier(2).eval(), _preprocess, torch.device("cpu"), skip_shared=True)
    full = ResidentModel(tiny_classifier(2).eval(), _preprocess, torch.device("cpu"))
    for resident in (skip, full):
        resident.activate_("digits", resident.place(digits, "digits"))
    moved = {r.skip_shared: r.activate_("aligned", r.place(aligned, "aligned")).bytes_moved for r in (skip, full)}
    not_shared = len(indices) - len(indices) // 2
    assert moved[False] - moved[True] == (sum(v.numel() for _, v in digits.sparse.values()) - not_shared) * 4
    for key, value in full.model.state_dict().items():
        assert torch.equal(skip.model.state_dict()[key], value), key
    for task, delta in (("digits", digits), ("aligned", aligned)):
        for resident in (skip, full):
            resident.activate_(task, resident.place(delta, task))
        assert torch.equal(skip.logits(x), full.logits(x))
    skip.deactivate_()
    full.deactivate_()
    for key, value in full.model.state_dict().items():
        assert torch.equal(skip.model.state_dict()[key], value), key

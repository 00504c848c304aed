import json

import pytest
import torch

from edged.bench.sparse import format_table, main, prune_by_magnitude_, run_sparse_bench
from edged.bench.vit import VitEncoder, tiny_vit_shape
from edged.compile.semi_structured import probe
from edged.sparse.layers import weight_layers
from edged.sparse.nm import group_nonzeros

CUDA_OK, CUDA_WHY = probe()


def test_cpu_bench_writes_json_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--batches", "2", "--iters", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["config"]["batches"] == [2]
    assert len(result["layers"]) == 3  # fc1, fc2, proj at one batch size
    for row in result["layers"]:
        assert row["sparse"] is None and "CPU" in row["sparse_unavailable"]
        assert 0 < row["dense"]["p50_ms"] <= row["dense"]["p99_ms"]
    (e2e,) = result["end_to_end"]
    assert e2e["dense"]["items_per_s"] > 0 and e2e["sparse"]["items_per_s"] > 0
    printed = capsys.readouterr().out
    assert "end to end" in printed and "p50/p95/p99" in printed


def test_encoder_is_pruned_to_2_4_everywhere_it_can_be():
    model = VitEncoder(tiny_vit_shape())
    pruned = prune_by_magnitude_(model)
    assert pruned == len(weight_layers(model))  # all tiny sizes are multiples of 16
    for layer in weight_layers(model).values():
        assert (group_nonzeros(layer.weight) <= 2).all()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 16)


def test_table_marks_missing_values():
    row = {"what": "x", "batch": 1, "dense": None, "sparse": {"error": "boom"}, "speedup_p50": None}
    assert "error" in format_table([row])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
def test_gpu_bench_small_shapes(tmp_path):
    result = run_sparse_bench("cuda", (2,), shape=tiny_vit_shape(), iters=5, out=tmp_path / "b.json")
    assert {"sparse_direct_graph", "dense_eager"} <= set(result["layers"][0]["variants"])
    assert result["end_to_end"][0]["dense"]["p50_ms"] > 0

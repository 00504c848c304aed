import json

import pytest
import torch

from edged.bench.sparse import format_table, main
from edged.bench.sparse_gpu_probe import format_tables, layer_shapes_at, plan_entries, run_probe, tuned_rows
from edged.bench.vit import VitEncoder, prune_by_magnitude_, tiny_vit_shape
from edged.compile.semi_structured import probe
from edged.compile.sparse_tuning import choose
from edged.sparse.layers import weight_layers
from edged.sparse.nm import group_nonzeros

CUDA_OK, CUDA_WHY = probe()


def test_cpu_bench_writes_json_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--batches", "2", "--iters", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["config"]["batches"] == [2] and result["config"]["sweep_algs"] == 6
    assert len(result["layers"]) == 3  # fc1, fc2, proj at one batch size
    for row in result["layers"]:
        assert row["sparse"] is None and "CPU" in row["sparse_unavailable"]
        assert 0 < row["dense"]["p50_ms"] <= row["dense"]["p99_ms"]
    (e2e,) = result["end_to_end"]
    assert e2e["dense"]["items_per_s"] > 0 and e2e["sparse"]["items_per_s"] > 0
    printed = capsys.readouterr().out
    assert "end to end" in printed and "p50/p95/p99" in printed


@pytest.mark.parametrize("bad", ["0", "-3", "six"])
def test_sweep_algs_takes_only_a_positive_count(bad, capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--sweep-algs", bad])
    assert f"argument --sweep-algs: {bad!r} is not an integer >= 1" in capsys.readouterr().err


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


def test_probe_plans_sparse_only_where_the_tuned_kernel_beats_dense():
    shape = tiny_vit_shape()
    names = layer_shapes_at(shape, [1])
    assert len(names) == 4  # qkv, proj, fc1, fc2 at one batch
    fast = ({"ms": 2.0}, [{"ms": 1.0, "kernel": "cusparselt", "config": {"alg_id": 1, "split_k": 1, "split_k_mode": 0}}])
    slow = ({"ms": 1.0}, [{"ms": 2.0, "kernel": "cusparselt", "config": {"alg_id": 0, "split_k": 1, "split_k_mode": 0}},
                          {"error": "RuntimeError: sparse_semi_structured_mad_op : Supported only on 8.x"}])
    plan = {key: choose(key[3], *(fast if name.startswith("fc1") else slow)) for key, (name, _) in names.items()}
    entries = {tuple(e[:4]): e[4:] for e in plan_entries(plan)}
    for (out_f, in_f, _bias, tokens), (kernel, config, wins) in entries.items():
        assert tokens == shape.tokens and kernel == "cusparselt" and config is not None
        assert wins == ((in_f, out_f) == (shape.dim, shape.mlp))
    rows = {r["name"].split()[0]: r for r in tuned_rows(plan, names)}
    assert rows["fc1"]["ms"] == 1.0 and rows["fc1"]["config"]["alg_id"] == 1 and rows["proj"]["ms"] == 2.0


def test_probe_table_shows_failures_and_speedups():
    result = {"config": {"batches": [1]}, "end_to_end": [],
              "layers": [{"name": "fc1", "batch": 1, "variant": "dense_graph", "ms": 2.0},
                         {"name": "fc1", "batch": 1, "variant": "tuned_graph", "ms": 1.0},
                         {"name": "fc1", "batch": 1, "variant": "torch_eager", "error": "boom"}]}
    table = format_tables(result)
    assert "2.00x" in table and "FAILED" in table and "boom" in table


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
def test_gpu_probe_small_shapes_checks_every_variant(tmp_path):
    # alg ids 0-3 only: the full sweep (and finding the ids that crash) is what the benchmark itself does
    result = run_probe(tmp_path, [2], budget_s=300, iters=5, compiled=False, shape=tiny_vit_shape(), sweep_algs=4)
    assert (tmp_path / "sparse_gpu_probe.json").is_file()
    by_variant = {(r["name"], r["variant"]): r for r in result["layers"]}
    for name in {r["name"] for r in result["layers"]}:
        assert by_variant[(name, "dense_graph")]["ms"] > 0
        assert by_variant[(name, "direct_graph")]["rel_err"] <= 2e-2
    e2e = {r["variant"]: r for r in result["end_to_end"]}
    assert e2e["dense"]["ms"] > 0 and e2e["sparse_all"]["sparse_layers"] > 0
    tuned = [r for r in result["layers"] if r["variant"] == "tuned_graph"]
    assert tuned and all(r["ms"] > 0 and r["kernel"] in ("cusparselt", "cutlass") for r in tuned)


def test_e2e_table_shows_speedup_over_dense_failed_checks_and_kept_kernels():
    from edged.bench.sparse_e2e import format_choices, format_e2e

    def row(name: str, p50: float, ok: bool = True, **extra) -> dict:
        return {"family": "MLP", "batch": 8, "row": name, "p50_ms": p50, "p99_ms": p50 * 1.1, "rel_err": 0.01,
                "verified": ok, "j_per_item": 0.002, "setup_s": 3.0, **extra}

    trials = [{"group": "blocks.*.0 4096->14336", "kernel": "torch", "ms": 1.5, "kept": True, "error": "",
               "base_ms": 2.0},
              {"group": "blocks.*.0 4096->14336", "kernel": "edged", "ms": None, "kept": False, "error": "boom"},
              {"group": "blocks.*.0 4096->14336", "kernel": "edged chained", "ms": 1.6, "kept": False, "error": "",
               "partner": {"blocks.*.2 14336->4096": "edged"}}]
    int8 = {"int8_kernels": {"14336<-4096 +bias @ 512 tokens": {"alg_id": 5}, "4096<-14336 +bias @ 512 tokens": None},
            "int8_in_place": {"alg0_ms": 0.9, "tuned_ms": 0.8, "kept": True}}
    given_up = row("edged choice", 2.0, trials=trials[:1], given_up="the kept kernels took 2.100 ms against dense")
    rows = [row("dense", 2.0), row("edged choice", 1.0, trials=trials), row("int8 2:4", 0.8, ok=False, **int8), given_up,
            {"family": "MLP", "batch": 8, "row": "int8 dense", "error": "no int8 kernel"}]
    table = format_e2e(rows)
    assert "2.00x" in table and "2.50x" in table and "0.010     3.0 FAIL" in table and "no int8 kernel" in table
    choices = format_choices(rows)
    assert "torch         1.500 ms vs 2.000 before  kept" in choices and "failed: boom" in choices
    assert "edged chained + blocks.*.2 14336->4096 edged 1.600 ms" in choices  # a pair trial names both switches
    assert "  given up for dense: the kept kernels took 2.100 ms against dense" in choices
    assert "MLP batch 8 int8 2:4: tuned 0.800 ms vs alg 0 0.900 ms, kept (14336<-4096 +bias @ 512 tokens: alg 5)" in choices


def test_the_edged_choice_row_keeps_each_shapes_tuned_kernels_as_json():
    from edged.bench.sparse_e2e import shape_plan

    fc1, fc2 = (14336, 4096, True, 512), (4096, 14336, True, 512)
    chained = {"ms": 0.05, "kernel": "cusparselt", "config": {"alg_id": 3, "split_k": 1, "split_k_mode": 0,
                                                                "feature_major": True, "input_feature_major": True}}
    plan = {fc1: choose(512, {"ms": 0.09}, [{"ms": 0.08, "kernel": "cusparselt", "config": {"alg_id": 1}}]),
            fc2: choose(512, {"ms": 0.09}, [{"ms": 0.10, "kernel": "cusparselt", "config": {"alg_id": 0}}, chained])}
    kept = json.loads(json.dumps(shape_plan(plan, {fc1, fc2, (8, 8, False, 8)})))  # an untuned shape is left out
    assert list(kept) == ["4096<-14336 +bias @ 512 tokens", "14336<-4096 +bias @ 512 tokens"]
    fc2_kept = kept["4096<-14336 +bias @ 512 tokens"]
    assert fc2_kept["fm_input_config"]["alg_id"] == 3 and fc2_kept["dense_ms"] == 0.09 and not fc2_kept["sparse"]
    assert kept["14336<-4096 +bias @ 512 tokens"]["sparse"] and "0.0800 ms" in kept["14336<-4096 +bias @ 512 tokens"]["reason"]

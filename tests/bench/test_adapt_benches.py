import json
from typing import Optional

import pytest
import torch

from edged.bench import adapt as adapt_bench
from edged.bench import train_step
from edged.bench.adapt_pairs import PAIRS
from edged.bench.adapt_rows import (COUNT_TOLERANCE, LORA_1, LORA_8, MAGNITUDE, RANDOM, TASKEDGE, TASO_LORA,
                                    TASKEDGE_LP_FT, TASO_LORA_RANK, lora_entries_, taso_lora_budget)
from edged.bench.adapt_verdicts import aggregate, verdicts
from edged.bench.linear_probe import ROW_LABEL as PROBE
from edged.methods.base import TaskBatches, backbone_layers
from edged.methods.options import LowRankOptions
from edged.methods.registry import get_method
from edged.methods.taso_lora import layer_shapes
from edged.models.loader import load_model


def run(label, seed, accuracy, trainable=100, pct=0.1, wall=1.0):
    return {"row": label, "method": label.split()[0], "seed": seed, "accuracy": accuracy, "trainable": trainable,
            "trainable_pct": pct, "wall_s": wall}


def test_aggregate_gives_mean_and_sample_std_over_seeds_per_row_in_order():
    runs = [run("b", 0, 0.90, wall=1.0), run("b", 1, 0.92, wall=2.0), run("b", 2, 0.94, wall=6.0), run("a", 0, 0.5)]
    b, a = aggregate(runs)
    assert (b["row"], b["seeds"], a["row"], a["seeds"]) == ("b", 3, "a", 1)
    assert b["accuracy_mean"] == pytest.approx(92.0) and b["accuracy_std"] == pytest.approx(2.0)  # points, ddof=1
    assert b["wall_s_mean"] == pytest.approx(3.0)
    assert a["accuracy_mean"] == pytest.approx(50.0) and a["accuracy_std"] == 0.0


def pair_verdicts(accuracies: dict[str, list[float]], counts: Optional[dict[str, int]] = None, pct: float = 0.1):
    counts = counts or {}
    runs = [run(label, seed, acc, trainable=counts.get(label, 100), pct=pct if label == TASKEDGE else 5.0)
            for label, accs in accuracies.items() for seed, acc in enumerate(accs)]
    return {v["key"]: v for v in verdicts({"p": aggregate(runs)})}


def test_verdicts_met_on_rows_built_to_meet_them():
    grid = f"{TASKEDGE} lr=0.01 head_lr=0.01"
    got = pair_verdicts({TASKEDGE: [0.95, 0.96, 0.97], LORA_8: [0.96, 0.965, 0.97], RANDOM: [0.90, 0.91, 0.92],
                         MAGNITUDE: [0.88, 0.89, 0.90], LORA_1: [0.93, 0.94, 0.95], TASO_LORA: [0.94, 0.94, 0.94],
                         grid: [0.96, 0.965, 0.965]}, counts={LORA_1: 1000, TASO_LORA: 995})
    assert [v["met"] for v in got.values()] == [True, True, True, True, True]
    assert "+0.3 points behind" in got["auto_near_grid"]["detail"]
    behind = pair_verdicts({TASKEDGE: [0.95, 0.95], grid: [0.96, 0.96]})["auto_near_grid"]
    assert behind["met"] is False and "+1.0 points behind" in behind["detail"]
    assert "+0.5 points behind" in got["near_lora_8"]["detail"] and "995 entries" in got["taso_lora_vs_lora_1"]["detail"]


def test_verdicts_miss_on_each_broken_condition_and_say_not_run_without_the_rows():
    far = pair_verdicts({TASKEDGE: [0.90, 0.91], LORA_8: [0.95, 0.95], RANDOM: [0.88, 0.93], MAGNITUDE: [0.95, 0.96],
                         LORA_1: [0.93, 0.93], TASO_LORA: [0.94, 0.94]}, counts={LORA_1: 1000, TASO_LORA: 980})
    assert far["near_lora_8"]["met"] is False  # 4.5 points behind LoRA r=8
    assert far["above_random"]["met"] is False  # margin 0 inside a spread of 3.5 + 0.7 points
    assert far["above_magnitude"]["met"] is False  # below magnitude
    taso = far["taso_lora_vs_lora_1"]
    assert taso["met"] is False and "counts differ" in taso["detail"]  # 2 % fewer entries, though more accurate
    ahead = pair_verdicts({TASKEDGE: [0.975, 0.975], LORA_8: [0.958, 0.958]}, pct=100 * 10617 / 10616832)
    assert ahead["near_lora_8"]["met"] is True  # one entry over 0.1 % from rounding up, and ahead of LoRA
    assert "1.7 points ahead" in ahead["near_lora_8"]["detail"]
    over_budget = pair_verdicts({TASKEDGE: [0.96, 0.96], LORA_8: [0.96, 0.96]}, pct=0.2)
    assert over_budget["near_lora_8"]["met"] is False
    assert {v["met"] for k, v in over_budget.items() if k != "near_lora_8"} == {None}
    assert over_budget["above_random"]["detail"] == "not run"


@pytest.mark.parametrize("pair", ["digits", "bbc"])
def test_taso_lora_budget_trains_lora_r1s_count_on_the_real_backbone(pair):
    model_name, options, task = PAIRS[pair].model, PAIRS[pair].model_options, PAIRS[pair].load()
    loaded = load_model(model_name, len(task.classes), seed=0, **options)
    # LoRA r=1 trains A (1, fan_in) and B (out, 1) on every layer but depthwise convolutions.
    reference = sum(layer.weight.shape[0] + layer.weight[0].numel() for layer in backbone_layers(loaded.model).values()
                    if getattr(layer, "groups", 1) == 1)
    assert lora_entries_(load_model(model_name, 3, seed=0, **options).model, 1) == reference
    budget, predicted = taso_lora_budget(layer_shapes(loaded.model), reference, TASO_LORA_RANK)
    assert reference * (1 - COUNT_TOLERANCE) <= predicted <= reference
    # The real method at that budget, scored on a few real samples, trains exactly the predicted count.
    few = task.subset(torch.arange(0, len(task), len(task) // 6)[:6])
    batches = TaskBatches(loaded.preprocess(few), few.y, batch_size=6)
    adaptation = get_method("taso_lora").function(loaded.model, batches, LowRankOptions(budget=budget,
                                                  lora_rank=TASO_LORA_RANK), None)
    assert adaptation.entries == predicted


def test_adapt_bench_runs_seeds_of_rows_on_a_real_pair_and_writes_raw_rows_aggregates_and_verdicts(tmp_path, capsys):
    out = tmp_path / "adapt.json"
    assert adapt_bench.main(["--pair", "digits", "--samples", "60", "--epochs", "1", "--seeds", "0,1",
                             "--methods", "taskedge,head,random", "--lr-grid", "0.01:0.01", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    digits = result["digits"]
    grid = "taskedge 0.1% lr=0.01 head_lr=0.01"
    assert [(r["row"], r["seed"]) for r in digits["runs"]] == [
        (TASKEDGE, 0), (TASKEDGE, 1), (RANDOM, 0), (RANDOM, 1), (TASKEDGE_LP_FT, 0), (TASKEDGE_LP_FT, 1),
        ("head only", 0), ("head only", 1), (PROBE, 0), (PROBE, 1), (grid, 0), (grid, 1)]
    probe = [r for r in digits["runs"] if r["row"] == PROBE]
    assert all(0.0 < r["accuracy"] <= 1.0 and r["trainable"] == 0 for r in probe)  # the independent probe
    assert all(r["config"]["lr"] == 0.01 for r in digits["runs"] if r["row"] == grid)
    assert digits["samples"] == 60 and digits["model_options"] == {"image_size": 32}
    assert [(a["row"], a["seeds"]) for a in digits["aggregates"]] == [(TASKEDGE, 2), (RANDOM, 2), (TASKEDGE_LP_FT, 2),
                                                                       ("head only", 2), (PROBE, 2), (grid, 2)]
    assert all(a["trainable_pct"] == pytest.approx(0.1, abs=1e-4) for a in digits["aggregates"] if a["seeds"] and
               a["row"] in (TASKEDGE, RANDOM, TASKEDGE_LP_FT, grid))
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["wall_s"] > 0 for r in digits["runs"])
    assert {v["met"] for v in result["verdicts"] if v["key"] == "above_random"} <= {True, False}
    printed = capsys.readouterr().out
    assert "taskedge above random" in printed and "not run" in printed
    assert {v["met"] for v in result["verdicts"] if v["key"] == "auto_near_grid"} <= {True, False}


def test_adapt_bench_names_what_it_accepts_on_bad_seeds_and_methods(capsys):
    for argv, accepted in ((["--seeds", "0,x"], "integers >= 0"), (["--methods", "taskedge,nope"], "accepted: bn_bias"),
                           (["--rows", "LoRA r=8,LoRA r=9"], "no row 'LoRA r=9'; accepted: taskedge 0.1%")):
        with pytest.raises(SystemExit):
            adapt_bench.parse_args(argv)
        assert accepted in capsys.readouterr().err


def test_adapt_bench_rows_select_by_label_within_the_methods():
    assert [r.label for r in adapt_bench.selected_rows(None, None, [TASKEDGE, "LoRA r=8"])] == [TASKEDGE, "LoRA r=8"]
    assert [r.label for r in adapt_bench.selected_rows(["lora"], None, [TASKEDGE, "LoRA r=8"])] == ["LoRA r=8"]


def test_train_step_bench_measures_every_method(tmp_path):
    out = tmp_path / "ts.json"
    assert train_step.main(["--tiny", "--batch", "4", "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"taskedge", "lora", "full"}
    assert rows["taskedge"]["trainable"] < rows["lora"]["trainable"] < rows["full"]["trainable"]
    assert rows["taskedge"]["optimizer_state_mb"] < rows["full"]["optimizer_state_mb"]
    assert all(r["step_ms"] > 0 and r["saved_activations_mb"] > 0 for r in rows.values())

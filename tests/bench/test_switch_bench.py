"""`edged bench switch` on the CPU with tiny settings: three real digit tasks on MobileNetV2 (32 px, 48 samples),
every row on both traces, and the orderings a task switch must show (no timed thresholds)."""

import json

from edged.bench import switch

ROWS = {"full reload (safetensors file)", "full copy (host memory)", "PEFT LoRA set_adapter (r=8)",
        "PEFT LoRA hotswap_adapter (r=8)", "edged cold (parse the delta file)", "edged warm (= hot on the CPU)",
        "edged hot (device cache)", "edged cache 50% of tasks, prefetch off", "edged cache 50% of tasks, prefetch on"}


def test_switch_bench_writes_every_row_and_the_orderings_hold(tmp_path, capsys):
    out = tmp_path / "switch.json"
    assert switch.main(["--tasks", "3", "--samples", "48", "--image-size", "32", "--switches", "20",
                        "--predicts", "10", "--full-checkpoints", "2", "--workdir", str(tmp_path / "work"),
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tasks"] == ["mnist", "mnist-even-odd", "digits8x8"]
    rows = {(r["row"], r["trace"]): r for r in result["rows"]}
    assert set(rows) == {(row, trace) for row in ROWS for trace in ("uniform", "markov")}
    memory = result["memory"]
    for trace in ("uniform", "markov"):
        hot, reload = rows[("edged hot (device cache)", trace)], rows[("full reload (safetensors file)", trace)]
        assert hot["p50_ms"] < reload["p50_ms"]
        assert 0 < hot["bytes_per_switch"] < memory["model_bytes"] <= reload["bytes_per_switch"]
        assert all(r["switches"] == 20 - 3 and r["p99_ms"] >= r["p50_ms"] > 0
                   for (_, t), r in rows.items() if t == trace)
        cached = rows[("edged cache 50% of tasks, prefetch on", trace)]
        assert 0.0 <= cached["hit_rate"] <= 1.0 and cached["prefetch_accuracy"] is not None
    assert 1.0 < memory["ratio"] < memory["tasks"] == 3
    assert [r["phase"].split(" ")[0] for r in result["storm"]] == ["steady", "storm", "steady", "storm"]
    assert result["storm"][3]["server"]["switches"] > 0  # the task server itself switched during its storm
    printed = capsys.readouterr().out
    assert "edged hot (device cache)" in printed and "x one model" in printed


def test_switch_layouts_hold_the_same_weights_every_way_and_shared_2_4_zeros_move_nothing(tmp_path, capsys):
    out = tmp_path / "layouts.json"
    assert switch.main(["--layouts", "--tasks", "2", "--samples", "48", "--image-size", "32", "--switches", "10",
                        "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    rows = {(r["tasks"], r["row"]): r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 15 and all(r["same"] for r in rows.values())  # every layout leaves the same weights
    before, default = (rows[("2:4 shared pattern", row)] for row in ("flat gaps, own zeros (before)",
                                                                       "smaller, shared 2:4 zeros (default)"))
    assert default["bytes_per_task"] < before["bytes_per_task"] and default["bytes_per_switch"] < before["bytes_per_switch"]
    for tasks in ("unaligned", "aligned"):  # about one entry per block: the smaller form is the flat one
        per_task = {row: rows[(tasks, row)]["bytes_per_task"] for row in
                    ("smaller of the two", "flat gaps, own zeros (before)", "block-wise")}
        assert per_task["smaller of the two"] == per_task["flat gaps, own zeros (before)"] < per_task["block-wise"]
    assert "smaller, shared 2:4 zeros (default)" in capsys.readouterr().out

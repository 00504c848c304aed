"""`edged bench align` end to end on real tasks (small settings): a table, JSON, and what alignment promises."""

from __future__ import annotations

import json

from edged.cli import main


def test_align_bench_adapts_real_tasks_both_ways_and_aligned_blocks_never_grow_faster(tmp_path, capsys):
    out = tmp_path / "align.json"
    code = main(["bench", "align", "--part", "blocks", "--samples", "120", "--image-size", "16", "--epochs", "1",
                 "--tasks", "digits,parity", "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert "union blocks aligned" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["task"] for r in rows] == ["digits", "parity"] and [r["classes"] for r in rows] == [10, 2]
    first, second = rows
    assert first["union_blocks_aligned"] == first["union_blocks_unaligned"]  # nothing earlier to align to
    assert second["union_blocks_aligned"] <= second["union_blocks_unaligned"]
    assert all(0.0 <= r[f"accuracy_{mode}"] <= 1.0 for r in rows for mode in ("aligned", "unaligned"))


def test_align_bench_2_4_part_compares_own_and_shared_patterns_on_real_tasks(tmp_path, capsys):
    out = tmp_path / "align.json"
    code = main(["bench", "align", "--part", "2:4", "--samples", "120", "--image-size", "16", "--epochs", "1",
                 "--tasks", "digits,parity", "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert "acc 2:4 shared (combined)" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert "rows" not in payload
    first, second = payload["rows_2_4"]
    assert first["accuracy_shared_first"] == first["accuracy_own"]  # the first task's pattern is its own
    assert first["pattern_overlap_first"] == 1.0
    assert 0.0 <= second["pattern_overlap_first"] < 1.0  # another task's importance picks other positions
    assert all(0.0 <= r[key] <= 1.0 for r in (first, second)
               for key in ("accuracy_own", "accuracy_shared_first", "accuracy_shared_combined"))

import json

import pytest

from edged.bench import adapt as adapt_bench
from edged.bench import train_step


def test_adapt_bench_runs_rows_on_the_real_pair_and_writes_json(tmp_path, capsys):
    out = tmp_path / "adapt.json"
    assert adapt_bench.main(["--pair", "mnist", "--samples", "80", "--epochs", "1", "--methods", "head,random",
                             "--out", str(out)]) == 0
    result = json.loads(out.read_text())["mnist"]
    assert [r["row"] for r in result["rows"]] == ["head only", "random 0.1%", "linear probe (sklearn)"]
    assert 0.0 < result["rows"][2]["accuracy"] <= 1.0  # the independent probe, on the same split
    sparse = result["rows"][1]
    assert sparse["trainable_pct"] == pytest.approx(0.1, abs=1e-4) and result["rows"][0]["trainable"] == 0
    assert 0.0 <= sparse["accuracy"] <= 1.0 and sparse["wall_s"] > 0
    assert "random 0.1%" in capsys.readouterr().out


def test_train_step_bench_measures_every_method(tmp_path):
    out = tmp_path / "ts.json"
    assert train_step.main(["--tiny", "--batch", "4", "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"taskedge", "lora", "full"}
    assert rows["taskedge"]["trainable"] < rows["lora"]["trainable"] < rows["full"]["trainable"]
    assert rows["taskedge"]["optimizer_state_mb"] < rows["full"]["optimizer_state_mb"]
    assert all(r["step_ms"] > 0 and r["saved_activations_mb"] > 0 for r in rows.values())

"""`edged bench train-step --policies`: a row per recomputation policy for taskedge, and full fine-tuning and
LoRA without and with block checkpointing, on the tiny ViT on CPU."""

from __future__ import annotations

import json

import pytest

from edged.bench import train_step


def test_policy_rows_trade_saved_activations_for_recomputation(tmp_path):
    out = tmp_path / "policies.json"
    argv = ["--tiny", "--batch", "4", "--steps", "2", "--device", "cpu", "--policies", "none,checkpoint_blocks",
            "--out", str(out)]
    assert train_step.main(argv) == 0
    rows = {(r["method"], r["policy"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(m, p) for m in ("taskedge", "full", "lora") for p in ("none", "checkpoint_blocks")}
    for method in ("taskedge", "full", "lora"):  # checkpointed blocks keep only their inputs
        assert rows[method, "checkpoint_blocks"]["saved_activations_mb"] < rows[method, "none"]["saved_activations_mb"]
    assert rows["full", "none"]["step_vs_full"] == 1.0 and all(r["step_ms"] > 0 for r in rows.values())


def test_an_unknown_policy_is_refused_naming_the_accepted_ones(capsys):
    with pytest.raises(SystemExit):
        train_step.main(["--tiny", "--device", "cpu", "--policies", "none,recompute_everything"])
    err = capsys.readouterr().err
    assert "'recompute_everything'" in err
    assert "accepted: none, compute_dtype, recompute_mlp, recompute_attn, checkpoint_blocks" in err

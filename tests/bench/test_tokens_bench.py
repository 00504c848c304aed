import json

import pytest

from edged.bench import tokens


def test_tokens_bench_compares_keep_ratios_against_every_token(tmp_path, capsys):
    out = tmp_path / "tokens.json"
    assert tokens.main(["--samples", "20", "--epochs", "1", "--method", "head", "--keeps", "1.0,4@0",
                        "--infer-batch", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    first, selected = result["rows"]
    assert first["setting"] == "all tokens" and first["model_options"]["token_keep"] == 1.0
    assert selected["setting"] == "keep 4 after layer 0"
    assert selected["model_options"] == {"max_length": 128, "token_keep": 4, "token_layer": 0}
    assert first["train_speedup"] == first["infer_speedup"] == 1.0 and first["accuracy_delta"] == 0.0
    assert selected["train_samples_per_s"] > 0 and selected["infer_samples_per_s"] > 0
    assert 0.0 <= selected["accuracy"] <= 1.0
    assert [r["setting"] for r in result["summary"]] == ["all tokens", "keep 4 after layer 0"]
    assert first["lr_search_share"] is None  # the head is fitted on features: no rate to search
    assert "keep 4 after layer 0" in capsys.readouterr().out


def test_both_step_modes_are_rows_of_their_own_each_against_its_own_every_token_row(tmp_path):
    out = tmp_path / "tokens.json"
    assert tokens.main(["--samples", "20", "--epochs", "1", "--method", "taskedge", "--keeps", "1.0,4@0",
                        "--infer-batch", "4", "--train-graph", "both", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["setting"] for r in rows] == ["all tokens, graphed steps", "keep 4 after layer 0, graphed steps",
                                            "all tokens, eager steps", "keep 4 after layer 0, eager steps"]
    assert rows[0]["train_speedup"] == rows[2]["train_speedup"] == 1.0  # each mode's own reference
    assert rows[0]["loop_speedup"] == rows[2]["loop_speedup"] == 1.0 and rows[1]["loop_samples_per_s"] > 0
    assert [r["cuda_graph_asked"] for r in rows] == [True, True, False, False]
    assert rows[0]["train_cuda_graph"] == "off: cpu has no CUDA graphs"  # a CPU has none to replay
    assert rows[2]["train_cuda_graph"] == "off: not asked for"


def _seed_row(seed, setting, keep, accuracy, delta, train_x, infer_x):
    return {"seed": seed, "setting": setting, "model_options": {"token_keep": keep}, "accuracy": accuracy,
            "accuracy_delta": delta, "train_samples_per_s": 10.0 * train_x, "train_speedup": train_x,
            "infer_samples_per_s": 20.0 * infer_x, "infer_speedup": infer_x, "loop_samples_per_s": 30.0 * train_x,
            "loop_speedup": train_x}


def test_summary_gives_mean_and_std_over_seeds_and_the_target_per_setting():
    rows = [_seed_row(0, "all", 1.0, 0.97, 0.0, 1.0, 1.0), _seed_row(0, "half", 0.5, 0.96, -1.0, 2.0, 1.6),
            _seed_row(1, "all", 1.0, 0.95, 0.0, 1.0, 1.0), _seed_row(1, "half", 0.5, 0.95, 0.0, 1.8, 1.4),
            _seed_row(0, "quarter", 0.25, 0.90, -7.0, 2.5, 2.0), _seed_row(1, "quarter", 0.25, 0.93, -2.0, 2.5, 2.0)]
    every, half, quarter = tokens.summarize(rows)
    assert (every["setting"], every["seeds"], every["target"]) == ("all", 2, "-")
    assert every["accuracy"] == "96.0 ± 1.4" and every["delta"] == "0.0 ± 0.0"
    assert half["delta"] == "-0.5 ± 0.7" and half["train_speedup"] == pytest.approx(1.9)
    assert half["infer_speedup"] == pytest.approx(1.5) and half["target"] == "met"  # -0.5 points, 1.9x and 1.5x
    assert quarter["target"] == "missed"  # 2.5x and 2x, but 4.5 points lost


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_tokens_bench_trains_and_times_on_the_gpu(tmp_path):
    out = tmp_path / "tokens.json"
    assert tokens.main(["--samples", "20", "--epochs", "1", "--method", "head", "--keeps", "1.0,4@0",
                        "--infer-batch", "4", "--device", "cuda", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cuda" and all(r["infer_samples_per_s"] > 0 for r in result["rows"])

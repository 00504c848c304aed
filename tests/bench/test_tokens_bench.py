import json

import pytest

from edged.bench import tokens


def test_tokens_bench_compares_keep_ratios_against_every_token(tmp_path, capsys):
    out = tmp_path / "tokens.json"
    assert tokens.main(["--samples", "20", "--epochs", "1", "--method", "head", "--keeps", "1.0,4@0",
                        "--infer-batch", "4", "--seeds", "0,1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    first, selected, _, second_seed = result["rows"]
    assert [r["seed"] for r in result["rows"]] == [0, 0, 1, 1] and second_seed["setting"] == "keep 4 after layer 0"
    assert first["setting"] == "all tokens" and first["model_options"]["token_keep"] == 1.0
    assert selected["setting"] == "keep 4 after layer 0"
    assert selected["model_options"] == {"max_length": 128, "token_keep": 4, "token_layer": 0}
    assert first["train_speedup"] == first["infer_speedup"] == 1.0 and first["accuracy_delta"] == 0.0
    assert selected["train_samples_per_s"] > 0 and selected["infer_samples_per_s"] > 0
    assert 0.0 <= selected["accuracy"] <= 1.0
    every, kept = result["summary"]
    assert every["seeds"] == kept["seeds"] == 2 and every["target"] == "-" and kept["target"] in ("met", "missed")
    assert every["delta"] == "0.0 ± 0.0" and every["train_speedup"] == 1.0
    assert kept["accuracy"].count("±") == 1 and kept["delta_mean"] == pytest.approx(
        (selected["accuracy_delta"] + second_seed["accuracy_delta"]) / 2)
    assert "keep 4 after layer 0" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU visible to PyTorch")
def test_tokens_bench_trains_and_times_on_the_gpu(tmp_path):
    out = tmp_path / "tokens.json"
    assert tokens.main(["--samples", "20", "--epochs", "1", "--method", "head", "--keeps", "1.0,4@0",
                        "--infer-batch", "4", "--device", "cuda", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cuda" and all(r["infer_samples_per_s"] > 0 for r in result["rows"])

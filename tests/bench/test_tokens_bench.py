import json

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
    assert "keep 4 after layer 0" in capsys.readouterr().out

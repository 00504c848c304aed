"""`edged bench predict` on the CPU with tiny settings: one real digit task on MobileNetV2 (32 px, 48 samples), each
backend at two batch sizes, answered by the backend it names and agreeing with eager (no timed thresholds)."""

import json

from edged.bench import predict


def test_predict_bench_times_eager_and_onnxruntime_through_the_task_server(tmp_path, capsys):
    out = tmp_path / "predict.json"
    assert predict.main(["--samples", "48", "--image-size", "32", "--batches", "1,4", "--predicts", "5",
                         "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(r["backend"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {(backend, batch) for backend in ("eager", "onnxruntime") for batch in (1, 4)}
    for (backend, _), row in rows.items():
        assert row["p99_ms"] >= row["p50_ms"] > 0 and row["predicts"] == 5
        assert row["max_abs_logit_diff"] < 1e-4  # the compiled artifact answers what the resident base does
        if backend == "eager":
            assert row["max_abs_logit_diff"] == 0.0
    assert any(r["max_abs_logit_diff"] > 0 for r in result["rows"])  # a different runtime answered, not eager again
    printed = capsys.readouterr().out
    assert "onnxruntime" in printed and "p99 ms" in printed

"""`edged bench predict` on the CPU with tiny settings: one real digit task on MobileNetV2 (32 px, 48 samples), each
backend at two batch sizes, answered by the backend it names and agreeing with eager (no timed thresholds)."""

import json

import pytest

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


def test_predict_bench_clients_run_each_count_at_each_wait_and_batch_concurrent_requests(tmp_path, capsys):
    out = tmp_path / "batching.json"
    assert predict.main(["--samples", "48", "--image-size", "32", "--clients", "1,3", "--waits", "0,300",
                         "--predicts", "6", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    rows = {(r["max_wait_ms"], r["clients"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(wait, clients) for wait in (0.0, 300.0) for clients in (1, 3)}
    for (_wait, clients), row in rows.items():
        assert row["predicts"] == 6 * clients and row["p99_ms"] >= row["p50_ms"] > 0 and row["predicts_per_s"] > 0
        assert 1.0 <= row["mean_batch_requests"] <= clients
    assert rows[(0.0, 1)]["mean_batch_requests"] == rows[(300.0, 1)]["mean_batch_requests"] == 1.0  # a lone client
    # a 300 ms window: a lone client's predict does not sit it out (its task's last batch had no company), and three
    # clients' requests share forwards, gathered as soon as the previous batch's count is in, not at the window's end
    assert rows[(300.0, 1)]["p50_ms"] < 150
    assert rows[(300.0, 3)]["mean_batch_requests"] > 1.0 and rows[(300.0, 3)]["p50_ms"] < 150
    assert "requests per forward" in capsys.readouterr().out


def test_predict_bench_refuses_bad_client_counts_and_waits(capsys):
    for flag, bad in (("--clients", "0"), ("--clients", "two"), ("--waits", "-1"), ("--waits", "5,x")):
        with pytest.raises(SystemExit):
            predict.main([flag, bad])
        assert "accepted: comma-separated" in capsys.readouterr().err

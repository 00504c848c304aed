"""`edged submit`, `edged status`, `edged tasks` and `edged predict` against a real daemon (`edged serve` on
loopback)."""

from __future__ import annotations

import re

import pytest

from jobs_helpers import FAST_JOB, MODEL, digits_npz

from edged.cli import build_parser, main


def test_submit_follow_and_status(daemon, tmp_path, capsys):
    data = tmp_path / "digits.npz"
    data.write_bytes(digits_npz(300))
    cli = ["--env-file", str(daemon.env_file)]
    code = main([*cli, "submit", str(data), "--model", MODEL, "--epochs", "1", "--image-size", "16",
                 "--budget", str(FAST_JOB["budget"]), "--lr", "0.03", "--head-lr", "0.02", "--follow",
                 "--url", daemon.url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "300 image samples, 10 classes" in out
    for line in ("job queued", "job running", "calibrate", "step 8/8", "epoch 0", "export", "job succeeded"):
        assert line in out, line
    job_id = re.search(r"^job (\w+): queued$", out, re.MULTILINE)[1]

    assert main([*cli, "status", "--url", daemon.url]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["ID", "STATE", "STAGE"]
    assert job_id in table and "succeeded" in table and "100 %" in table

    assert main([*cli, "status", job_id, "--url", daemon.url]) == 0
    details = capsys.readouterr().out
    assert "accuracy_after" in details and "artifact      merged.safetensors" in details

    bad = main([*cli, "submit", str(data), "--model", MODEL, "--method", "nope", "--url", daemon.url])
    assert bad == 2 and "unknown method 'nope'" in capsys.readouterr().err

    # every job field is a flag of its own (read from the request schema): --head-lr reached the worker's config
    assert daemon.get(f"/v1/jobs/{job_id}").json()["config"]["adapt"]["head_lr"] == 0.02
    # the job published a task, listed by `edged tasks` and asked by `edged predict`
    assert main([*cli, "tasks", "--url", daemon.url]) == 0
    tasks = capsys.readouterr().out
    task_id = daemon.get("/v1/tasks").json()[0]["id"]
    assert task_id in tasks and "10 classes" in tasks
    sample = tmp_path / "x.npz"
    sample.write_bytes(digits_npz(2, seed=1))
    assert main([*cli, "predict", task_id, str(sample), "--top-k", "2", "--url", daemon.url]) == 0
    answer = capsys.readouterr().out.splitlines()
    assert len(answer) == 3 and answer[0].startswith("#0: ") and answer[0].count(" %") == 2
    assert answer[-1].startswith("latency ") and answer[-1].endswith("answered by eager)")


def test_status_without_a_daemon_says_how_to_start_one(tmp_path, capsys):
    env_file = tmp_path / "edged.env"
    env_file.write_text("EDGED_TOKEN=cli-test-token-0123456789\n")
    assert main(["--env-file", str(env_file), "status", "--url", "http://127.0.0.1:9"]) == 2
    assert "start it with `edged serve`" in capsys.readouterr().err


def test_a_list_field_is_a_repeated_flag():
    args = build_parser().parse_args(["submit", "x.npz", "--model", f"{MODEL}=cnn.pt", "--drop-weight-keys", "_fc.",
                                      "--drop-weight-keys", "aux."])
    assert args.drop_weight_keys == ["_fc.", "aux."]  # not list("_fc."), one character per prefix


def test_submit_takes_token_keep_as_a_count_or_a_fraction():
    for text, value in (("32", 32), ("0.5", 0.5), ("1.0", 1.0)):
        args = build_parser().parse_args(["submit", "news.jsonl", "--model", "minilm-l6", "--token-keep", text])
        assert args.token_keep == value and type(args.token_keep) is type(value)


def test_submit_takes_a_learning_rate_or_auto_and_names_both_on_a_bad_one(capsys):
    args = build_parser().parse_args(["submit", "x.npz", "--model", MODEL, "--lr", "auto", "--head-lr", "0.01"])
    assert (args.lr, args.head_lr) == ("auto", 0.01)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit", "x.npz", "--model", MODEL, "--lr", "fast"])
    assert "'fast' is not a finite number or 'auto'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["--budget", "nan"], "argument --budget: 'nan' is not a finite number"),
    (["--val-fraction", "inf"], "argument --val-fraction: 'inf' is not a finite number"),
    (["--lr", "nan"], "argument --lr: 'nan' is not a finite number or 'auto'"),
    (["--token-keep", "inf"], "argument --token-keep: 'inf' is not a finite number"),
])
def test_submit_refuses_nan_and_inf_before_it_reads_the_dataset(argv, said, capsys):
    """A request body cannot carry them (JSON has no nan): they ended in a client-side traceback before."""
    with pytest.raises(SystemExit) as stop:
        main(["submit", "missing.npz", "--model", MODEL, "--url", "http://127.0.0.1:9", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err

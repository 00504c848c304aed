"""`edged bench ...` through the `edged` command: a bad option ends in one error line that names it, what it
accepts and what was given (exit status 2), never a traceback: a number by the bench's own parser before any work,
an option the job's config refuses (a method name) by that config's check."""

from __future__ import annotations

import pytest

from edged.cli import main


def test_an_option_the_job_config_refuses_is_one_error_line(capsys):
    assert main(["bench", "tokens", "--method", "nope", "--samples", "20", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edged: error: edged bench tokens: method: Value error, unknown method 'nope'; accepted: ")
    assert err.rstrip().endswith("(given 'nope')")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, option", [
    (["bench", "tokens", "--batch-size", "0"], "--batch-size"),
    (["bench", "adapt", "--epochs", "0"], "--epochs"),
    (["bench", "int8", "--samples", "ten"], "--samples"),
    (["bench", "sparse", "--iters", "-5"], "--iters"),
    (["bench", "train-step", "--steps", "1,2"], "--steps"),
])
def test_a_count_below_one_is_refused_before_any_work(argv, option, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: '{argv[-1]}' is not an integer >= 1" in err and "Traceback" not in err


BAD_NUMBERS = [
    (["bench", "adapt", "--image-size", "8"], "--image-size: '8' is not an integer >= 16 and <= 1024"),
    (["bench", "adapt", "--epochs", "1001"], "--epochs: '1001' is not an integer >= 1 and <= 1000"),
    (["bench", "align", "--budget", "0"], "--budget: '0' is not a number > 0 and <= 1"),
    (["bench", "align", "--strength", "nan"], "--strength: 'nan' is not a finite number >= 0 and <= 10"),
    (["bench", "api", "--duration", "inf"], "--duration: 'inf' is not a finite number > 0"),
    (["bench", "api", "--worker-nice", "20"], "--worker-nice: '20' is not an integer >= 0 and <= 19"),
    (["bench", "int8", "--seed", "-1"], "--seed: '-1' is not an integer >= 0"),
    (["bench", "predict", "--threads", "0"], "--threads: '0' is not an integer >= 1"),
    (["bench", "prune", "--batch-size", "4097"], "--batch-size: '4097' is not an integer >= 1 and <= 4096"),
    (["bench", "sparse", "--tune-s", "-1"], "--tune-s: '-1' is not a number > 0"),
    (["bench", "switch", "--cache-fraction", "2.0"], "--cache-fraction: '2.0' is not a number > 0 and <= 1"),
    (["bench", "switch", "--device", "gpu"], "--device: unknown device 'gpu'; accepted: auto, cpu, cuda, cuda:N"),
    (["bench", "tokens", "--budget", "2"], "--budget: '2' is not a number > 0 and <= 1"),
    (["bench", "train-step", "--lora-rank", "0"], "--lora-rank: '0' is not an integer >= 1 and <= 256"),
]


@pytest.mark.parametrize("argv, said", BAD_NUMBERS, ids=[" ".join(argv[1:]) for argv, _ in BAD_NUMBERS])
def test_a_number_out_of_its_bounds_is_one_argparse_line_through_the_edged_command(argv, said, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"edged bench {argv[1]}: error: argument {said}" and "Traceback" not in err

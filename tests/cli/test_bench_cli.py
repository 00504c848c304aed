"""`edged bench ...` through the `edged` command: a bad option ends in one error line that names it, what it
accepts and what was given (exit status 2), never a traceback: a count by the bench's own parser before any work,
an option the job's config refuses by that config's check."""

from __future__ import annotations

import pytest

from edged.cli import main


def test_an_option_the_job_config_refuses_is_one_error_line(capsys):
    assert main(["bench", "tokens", "--budget", "2", "--samples", "20", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edged: error: edged bench tokens: budget: Input should be less than or equal to 1 (given 2.0)")
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

"""`edged bench ...` through the `edged` command: a bench option the job's own config refuses ends in one error
line that names the option, what it accepts and what was given, with exit status 2, never a traceback."""

from __future__ import annotations

import pytest

from edged.cli import main


@pytest.mark.parametrize("argv, option", [
    (["bench", "tokens", "--batch-size", "0", "--samples", "20", "--epochs", "1"], "batch_size"),
    (["bench", "adapt", "--pair", "digits", "--epochs", "0", "--seeds", "0", "--rows", "head only"], "epochs"),
])
def test_a_bench_option_the_job_config_refuses_is_one_error_line(argv, option, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edged: error: edged bench {argv[1]}: {option}: Input should be greater than or equal to 1 "
                          "(given 0)")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

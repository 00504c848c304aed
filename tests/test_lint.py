"""Lint and types are part of the tests: ruff and mypy over edged/, with the settings in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing_in_edged_or_tests():
    result = _run("ruff", "check", "edged", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_type_errors_in_edged():
    result = _run("mypy")  # files, plugins and Python version from [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr

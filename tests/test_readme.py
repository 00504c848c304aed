"""The README stays honest: every setting, job field, command and benchmark the code has is documented there."""

from __future__ import annotations

import re
from pathlib import Path

from edged.cli import BENCHMARKS, SUBCOMMANDS, build_parser
from edged.jobs.schemas import JobCreate
from edged.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _table_first_cells(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\| `([^`]+)`", text, flags=re.MULTILINE)}


def test_every_setting_is_a_row_of_the_settings_table():
    documented = _table_first_cells(README.split("## Settings", 1)[1].split("\n## ", 1)[0])
    expected = {f"EDGED_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from the README's Settings table"
    assert documented - expected == set(), "README documents settings the code does not have"


def test_every_job_field_is_described():
    missing = [name for name in JobCreate.model_fields if f"`{name}`" not in README]
    assert missing == []


def test_every_command_and_benchmark_is_in_the_command_table():
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set(subparsers.choices)  # type: ignore[attr-defined]
    assert len(commands) == len(SUBCOMMANDS)
    table = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    assert [c for c in commands if f"`edged {c}" not in table] == []
    assert [b for b in BENCHMARKS if b not in table] == []

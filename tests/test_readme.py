"""The README stays honest: every setting, job field, command, benchmark, database table and column, and
jobs.metrics key the code has is documented there, and nothing the code lacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edged.cli import BENCHMARKS, SUBCOMMANDS, build_parser
from edged.jobs.schemas import JobCreate
from edged.jobs.states import FINAL_STATES
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


# --- the database section: tables and columns as the migrations create them, jobs.metrics as a job writes it ---

DATABASE = README.split("\n## The database", 1)[1].split("\n## ", 1)[0]
JOB_TESTS = Path(__file__).resolve().parent / "jobs"


def _documented_columns() -> dict[str, set[str]]:
    """table -> columns, from the core tables' summary (third cell) and each `### Table `name`` section."""
    tables: dict[str, set[str]] = {}
    for row in re.finditer(r"^\| `(\w+)` \|[^|]*\|([^\n]*)\|$", DATABASE.split("\n### ", 1)[0], flags=re.MULTILINE):
        tables[row.group(1)] = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", row.group(2))))
    for section in DATABASE.split("\n### Table ")[1:]:
        name = re.match(r"`(\w+)`", section)
        assert name, f"a '### Table' heading without a `table` name: {section[:60]!r}"
        tables[name.group(1)] = _table_first_cells(section)
    return tables


def test_every_table_and_column_in_the_readme_is_the_one_the_migrations_create(db):
    created = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}  # (cid, name, ...)
               for table in db.table_names() if not table.startswith("sqlite_")}
    assert _documented_columns() == created


def _keys(value: object) -> set[str]:
    """Every key of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


@pytest.fixture
def real_job_metrics(client, auth, uploads, digits_task, monkeypatch, test_model_module) -> dict:
    """The metrics of a real 2:4 job compiled with onnxruntime and aligned (the job with the most keys), run by a
    worker."""
    from jobs_helpers import FAST_JOB, wait_for  # on sys.path through test_model_module

    monkeypatch.setenv("PYTHONPATH", str(JOB_TESTS))  # the worker process imports the test model from there
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    npz = uploads.npz(x=digits_task.x.numpy()[:300, 0], y=digits_task.y.numpy()[:300])
    dataset = client.post("/v1/datasets", headers=auth, files={"file": ("digits.npz", npz)}).json()["id"]
    submitted = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset, "sparsity": "2:4",
                                                           "compile": "onnxruntime", "align_strength": 1.0})
    assert submitted.status_code == 202, submitted.text
    job = wait_for(lambda: client.get(f"/v1/jobs/{submitted.json()['id']}", headers=auth).json(),
                   lambda j: j["state"] in FINAL_STATES, timeout_s=180)
    assert job["state"] == "succeeded", job
    return job["metrics"]


def test_the_metrics_keys_in_the_readme_are_the_ones_a_job_writes(real_job_metrics):
    paragraph = DATABASE.split("`jobs.metrics` keys:", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(\w+)`", paragraph))
    assert documented - _keys(real_job_metrics) == set(), "README names metrics keys a job does not write"
    assert set(real_job_metrics) - documented == set(), "a job writes metrics keys the README does not name"


def test_the_code_map_names_every_package_and_only_paths_that_exist():
    repo = Path(__file__).resolve().parents[1]
    table = README.split("## Code map", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:edged|deploy|systemd|docker)/[^`]*)`", table))
    assert [path for path in named if not (repo / path).exists()] == []
    packages = {f"{p.relative_to(repo).as_posix()}/" for p in (repo / "edged").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - named == set(), "packages missing from the README's code map"

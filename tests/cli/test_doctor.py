"""`edged doctor`: every check present with the same shape, choices equal to what the daemon would
pick, sensors read under settings.sysfs_root, and a broken piece reported instead of crashing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edged.compile import resolve_backend
from edged.data.bundled import BUNDLED
from edged.doctor import BUNDLED_DATA_PACKAGES, diagnose, format_table
from edged.settings import get_settings

CHECKS = {
    "python", "torch", "cuda", "tensorrt", "torch_tensorrt", "cusparselt", "jtop", "nvml", "rapl",
    "power_source", "compile_backend", "memory", "disk", "models", "datasets",
}


def _fake_rapl_zone(sysfs_root, energy_uj: str) -> None:
    zone = sysfs_root / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text(energy_uj)


@pytest.fixture
def report(tmp_path):
    return diagnose(get_settings(data_dir=tmp_path / "not" / "yet" / "created"))


def test_every_check_has_availability_and_detail(report):
    assert set(report) == CHECKS
    for name, entry in report.items():
        assert isinstance(entry["available"], bool), name
        assert isinstance(entry["detail"], str) and entry["detail"], name


def test_compile_backend_is_what_compile_auto_resolves_to(report):
    backend = report["compile_backend"]
    assert backend["selected"] == resolve_backend("auto")
    first_usable = next(b["name"] for b in backend["backends"] if b["available"])
    assert backend["selected"] == first_usable


def test_gpu_rows_agree_with_torch(report):
    import torch

    assert report["cuda"]["available"] == torch.cuda.is_available()
    assert report["torch"]["version"] == torch.__version__
    if not torch.cuda.is_available():
        assert not report["cusparselt"]["available"]


def test_memory_and_disk_numbers(report, tmp_path):
    memory, disk = report["memory"], report["disk"]
    assert 0 < memory["available_mb"] <= memory["total_mb"]
    assert 0 < disk["free_mb"] <= disk["total_mb"]
    assert disk["data_dir"] == str((tmp_path / "not" / "yet" / "created").resolve())


def test_bundled_packages_cover_the_bundled_datasets(report):
    assert set(BUNDLED_DATA_PACKAGES) == set(BUNDLED)
    assert {d["name"] for d in report["datasets"]["datasets"]} == set(BUNDLED)
    assert "mobilenet_v2" in {m["name"] for m in report["models"]["models"]}


def test_rapl_is_read_under_the_configured_sysfs_root(tmp_path):
    _fake_rapl_zone(tmp_path / "sys", "123456\n")
    report = diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=tmp_path / "sys"))
    assert report["rapl"]["available"]
    sources = report["power_source"]["sources"]
    assert report["power_source"]["selected"] == next(s["name"] for s in sources if s["available"])
    assert not diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=tmp_path / "empty"))["rapl"]["available"]


def test_a_broken_sensor_is_reported_not_raised(tmp_path):
    _fake_rapl_zone(tmp_path / "sys", "garbage\n")  # unparsable counter: the source raises ValueError
    report = diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=tmp_path / "sys"))
    assert not report["power_source"]["available"]
    assert "check failed: ValueError" in report["power_source"]["detail"]
    assert not report["rapl"]["available"]
    assert report["compile_backend"]["available"]  # the other checks still ran


def test_table_lists_every_check(report):
    table = format_table(report)
    for name in CHECKS:
        assert any(line.startswith(name + " ") for line in table.splitlines()), name


def test_cli_json(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env["EDGED_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "edged.cli", "doctor", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == CHECKS

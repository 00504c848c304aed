"""`edged doctor`: every check present with the same shape, each checked against facts the test knows
without doctor's own code: the documented `auto` orders, GPUs hidden with CUDA_VISIBLE_DEVICES, device
files and nvidia-smi, the installed torch's package metadata, psutil's memory, a tmpfs of known size,
a fake sysfs tree; and a broken piece reported instead of crashing."""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

import psutil
import pytest
from packaging.version import Version

from edged.cli.doctor import BUNDLED_DATA_PACKAGES, diagnose, format_table
from edged.data.bundled import BUNDLED
from edged.settings import get_settings

CHECKS = {
    "python", "torch", "cuda", "tensorrt", "torch_tensorrt", "cusparselt", "jtop", "nvml", "rapl",
    "power_source", "compile_backend", "memory", "disk", "models", "datasets",
}
# The `auto` choices as the README documents them: the first present, in these orders.
COMPILE_ORDER = ["tensorrt", "cusparselt", "onnxruntime", "eager"]
POWER_ORDER = ["jtop", "ina3221", "nvml", "rapl", "none"]
MIB = 2**20


def _fake_rapl_zone(sysfs_root, energy_uj: str) -> None:
    zone = sysfs_root / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text(energy_uj)


def _first_present(rows: list[dict], order: list[str]) -> str:
    available = {row["name"]: row["available"] for row in rows}
    return next(name for name in order if available[name])


@pytest.fixture
def report(tmp_path):
    return diagnose(get_settings(data_dir=tmp_path / "not" / "yet" / "created"))


def test_every_check_has_availability_and_detail(report):
    assert set(report) == CHECKS
    for name, entry in report.items():
        assert isinstance(entry["available"], bool), name
        assert isinstance(entry["detail"], str) and entry["detail"], name


def test_compile_backends_in_the_documented_order_and_auto_takes_the_first_present(report):
    backend = report["compile_backend"]
    rows = {b["name"]: b for b in backend["backends"]}
    assert [b["name"] for b in backend["backends"]] == COMPILE_ORDER
    assert rows["eager"]["available"] and rows["onnxruntime"]["available"]  # onnxruntime: an edged dependency
    assert backend["selected"] == _first_present(backend["backends"], COMPILE_ORDER)
    assert backend["detail"] == f"auto -> {backend['selected']}"


def test_torch_row_is_the_installed_torch(report):
    assert Version(report["torch"]["version"]) == Version(importlib.metadata.version("torch"))


def test_cuda_row_agrees_with_the_machine(report):
    cuda = report["cuda"]
    if not cuda["available"]:
        assert not report["cusparselt"]["available"]  # 2:4 kernels need a GPU
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi and "CUDA_VISIBLE_DEVICES" not in os.environ:
        listed = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=60).stdout
        gpus = len(re.findall(r"^GPU \d+:", listed, re.MULTILINE))
        assert cuda["available"] == (gpus > 0) and cuda.get("device_count", 0) == gpus
    elif not glob.glob("/dev/nvidia[0-9]*") and not glob.glob("/dev/nvhost-*"):
        assert not cuda["available"]  # no GPU device file on this machine
    if cuda["available"]:
        assert re.fullmatch(r"\d+\.\d+", cuda["compute_capability"]) and cuda["gpu_memory_mb"] > 0


def test_memory_and_disk_numbers(report, tmp_path):
    memory, disk = report["memory"], report["disk"]
    assert memory["total_mb"] == psutil.virtual_memory().total // MIB
    assert 0 < memory["available_mb"] <= memory["total_mb"]
    assert 0 < disk["free_mb"] <= disk["total_mb"]
    assert disk["data_dir"] == str((tmp_path / "not" / "yet" / "created").resolve())


def _mounted_size_mb(mount_point) -> int:
    """The size of the tmpfs at `mount_point` as the kernel's mount table states it (`size=<n>k`)."""
    for line in open("/proc/mounts").read().splitlines():
        _, where, _, options = line.split()[:4]
        if where == str(mount_point):
            return int(re.search(r"size=(\d+)k", options)[1]) // 1024
    raise AssertionError(f"{mount_point} is not mounted")


def test_disk_is_the_file_system_the_data_dir_will_be_on(small_data_dir):
    settings = get_settings(data_dir=small_data_dir / "not" / "yet")
    empty = diagnose(settings)["disk"]
    assert empty["total_mb"] == _mounted_size_mb(small_data_dir) and empty["free_mb"] == empty["total_mb"]
    (small_data_dir / "ten-mib").write_bytes(bytes(10 * MIB))
    assert diagnose(settings)["disk"]["free_mb"] == empty["free_mb"] - 10


def test_bundled_packages_cover_the_bundled_datasets(report):
    assert set(BUNDLED_DATA_PACKAGES) == set(BUNDLED)
    assert {d["name"] for d in report["datasets"]["datasets"]} == set(BUNDLED)
    assert "mobilenet_v2" in {m["name"] for m in report["models"]["models"]}


def test_rapl_is_read_under_the_configured_sysfs_root(tmp_path):
    _fake_rapl_zone(tmp_path / "sys", "123456\n")
    report = diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=tmp_path / "sys"))
    assert report["rapl"]["available"]
    sources = report["power_source"]["sources"]
    assert [s["name"] for s in sources] == POWER_ORDER
    assert report["power_source"]["selected"] == _first_present(sources, POWER_ORDER)
    chosen = diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=tmp_path / "sys", power_source="rapl"))
    assert chosen["power_source"]["selected"] == "rapl" and chosen["power_source"]["detail"] == "rapl -> rapl"

    empty = tmp_path / "empty"
    assert not diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=empty))["rapl"]["available"]
    missing = diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=empty, power_source="rapl"))
    assert missing["power_source"]["selected"] is None and not missing["power_source"]["available"]
    assert missing["power_source"]["detail"] == "rapl is unavailable"


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


def test_cli_json_with_the_gpus_hidden(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env |= {"EDGED_DATA_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "edged.cli", "doctor", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == CHECKS
    assert not report["cuda"]["available"] and not report["cusparselt"]["available"]
    backends = {b["name"]: b["available"] for b in report["compile_backend"]["backends"]}
    assert not backends["tensorrt"] and not backends["cusparselt"]
    assert report["compile_backend"]["selected"] == "onnxruntime"  # the first documented backend without a GPU

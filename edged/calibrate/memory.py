"""Peak-memory probes: the CUDA allocator's peak statistics, or the process's peak resident set on CPU.

On Linux, writing "5" to /proc/self/clear_refs resets VmHWM (peak RSS) to the current RSS, so the growth
of the peak above a baseline can be measured around one piece of work.
"""

from __future__ import annotations

import ctypes
import re
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass

import torch

_STATUS = "/proc/self/status"


def _status_kb(field: str) -> int | None:
    try:
        with open(_STATUS) as status:
            found = re.search(rf"^{field}:\s+(\d+)\s+kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def release_free_cpu_memory() -> None:
    """Hand the C allocator's free pages back to the OS (glibc malloc_trim), so the resident set is what is
    really in use. Without this, memory freed by earlier work is reused invisibly and a probe under-reads."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks are then upper-bounded less tightly
        pass


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """Peak memory above the baseline taken when measuring started, in MiB (None where unmeasurable)."""

    mb: float | None = None


def current_mb(device: torch.device) -> float | None:
    """Memory in use now: CUDA allocated bytes, or the process's resident set on CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    rss = _status_kb("VmRSS")
    return None if rss is None else rss / 1024


@contextmanager
def measure_peak(device: torch.device, baseline_mb: float | None = None) -> Iterator[PeakMemory]:
    """Measure the peak memory of the enclosed block on `device`, above `baseline_mb` (default: now).

    A fixed baseline taken once matters on CPU: memory the allocator kept from earlier work is reused
    without growing the resident set, so peaks are only comparable against the same starting point.
    """
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device) / 2**20 if baseline_mb is None else baseline_mb
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result.mb = max(0.0, torch.cuda.max_memory_allocated(device) / 2**20 - base)
        return
    release_free_cpu_memory()
    can_reset = _reset_cpu_peak()
    base_kb = _status_kb("VmRSS") if baseline_mb is None else baseline_mb * 1024
    yield result
    peak = _status_kb("VmHWM")
    if can_reset and base_kb is not None and peak is not None:
        result.mb = max(0.0, peak - base_kb) / 1024


def cpu_peak_measurable() -> bool:
    return _reset_cpu_peak() and _status_kb("VmHWM") is not None

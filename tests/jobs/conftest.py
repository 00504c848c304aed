"""Job tests run real worker processes: they import the tiny test model through PYTHONPATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def worker_environment(monkeypatch):
    """The worker is a child process: it finds the test model through PYTHONPATH. One torch thread: on
    this shared 2-core box, two OpenMP threads spin against each other (a step measured 0.58 s with
    two threads and 0.013 s with one, tiny model, batch 32)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

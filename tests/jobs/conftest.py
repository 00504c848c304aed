"""Job tests run real worker processes: they import the tiny test model through PYTHONPATH."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def worker_import_path(monkeypatch):
    """The worker is a child process: it finds the test model through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))

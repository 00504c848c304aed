"""The daemon's sampler: a thread that reads the power source and appends to `telemetry_samples`.

It samples every `active_interval_s` while a job runs and every `idle_interval_s` otherwise. A job
counts as running when `set_active(job_id)` named one, or else when `running_job(db)` finds one (the
daemon passes the job queue's query: the worker is another process, the database is what both share). Each
row carries the energy since the previous row, so the energy of any time range is a SUM. After
each insert, rows beyond `retention_rows` are deleted, oldest first, so the database stays bounded.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Union

import sqlite_utils

from edged.store.db import open_db
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.energy import EnergyIntegrator
from edged.telemetry.reading import PowerReading, PowerSource

log = logging.getLogger(__name__)

RunningJob = Callable[[sqlite_utils.Database], Optional[str]]


def _no_job(db: sqlite_utils.Database) -> Optional[str]:
    return None


class Sampler:
    def __init__(self, db_path: Union[str, Path], source: PowerSource, config: TelemetryConfig,
                 running_job: RunningJob = _no_job) -> None:
        self.source = source
        self.config = config
        self._db_path = db_path
        self._running_job_in = running_job
        self._db: Optional[sqlite_utils.Database] = None
        self._explicit_job: Optional[str] = None
        self._integrator = EnergyIntegrator()
        self._last_energy_total = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.latest: Optional[dict[str, Any]] = None  # the last row written
        self.energy_total_j = 0.0  # since the sampler started: what /metrics exports as a counter

    def set_active(self, job_id: Optional[str]) -> None:
        """Name the running job (sample fast, tag rows) or None; takes effect at once."""
        self._explicit_job = job_id
        self._wake.set()

    def _db_conn(self) -> sqlite_utils.Database:
        if self._db is None:
            self._db = open_db(self._db_path)
        return self._db

    def _running_job(self, db: sqlite_utils.Database) -> Optional[str]:
        if self._explicit_job is not None:
            return self._explicit_job
        return self._running_job_in(db)

    def _row(self, reading: PowerReading, job_id: Optional[str]) -> dict[str, Any]:
        self._integrator.add(reading)
        total = self._integrator.joules
        step = None if total is None else total - self._last_energy_total
        if total is not None:
            self._last_energy_total = total
            self.energy_total_j = total
        return {
            "ts": reading.t,
            "job_id": job_id,
            "source": self.source.name,
            "power_w": reading.power_w,
            "energy_j": step,
            "gpu_util_pct": reading.gpu_util,
            "cpu_util_pct": reading.cpu_util,
            "mem_used_mb": reading.mem_used_mb,
            "temp_c": reading.temp_c,
            "rails": json.dumps(reading.rails),
        }

    def sample_once(self) -> dict[str, Any]:
        """Read, insert one row, prune beyond retention; returns the row. Thread-safe."""
        with self._lock:
            db = self._db_conn()
            job_id = self._running_job(db)
            row = self._row(self.source.read(), job_id)
            with db.atomic():
                row["id"] = db.table("telemetry_samples").insert(row).last_pk
                db.execute(
                    "DELETE FROM telemetry_samples WHERE id <= ?", [row["id"] - self.config.retention_rows]
                )
            self.latest = row
            return row

    def _interval(self) -> float:
        active = self.latest is not None and self.latest["job_id"] is not None
        active = active or self._explicit_job is not None
        interval = self.config.active_interval_s if active else self.config.idle_interval_s
        return max(interval, self.source.min_interval_s)

    def _run(self) -> None:
        failing_with: Optional[str] = None  # the error of the current run of failures: logged once, not every tick
        while not self._stop.is_set():
            try:
                self.sample_once()
                if failing_with is not None:
                    log.info("telemetry samples are stored again")
                failing_with = None
            except Exception as exc:  # a locked or full database costs a sample, never the thread
                if failing_with != repr(exc):
                    log.exception("telemetry sample failed (logged once until it works or fails differently)")
                failing_with = repr(exc)
            self._wake.wait(self._interval())
            self._wake.clear()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edged-telemetry-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (bounded wait), close the database connection and the power source."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        self.source.close()

"""The job worker: `python -m edged.jobs.worker --settings FILE [--parent-pid PID] JOB_ID`.

A child process of the daemon's job manager, so that a crash, a CUDA error or an OOM kill ends this
process and not the API. It writes the job's events, progress and final state to SQLite itself.
Exit codes: 0 the job reached a final state (succeeded, failed or cancelled); EXIT_STOPPED when a
SIGTERM stopped it between steps, leaving it `running` for the manager to requeue (its work
directory keeps the finished stages); EXIT_DISK_FULL when the data directory filled up and even the
job's final state could not be written (the manager writes it, retrying); anything else is a crash
the manager reports. Its settings are the daemon's, from the file the manager writes (`edged.jobs.worker_env`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Optional

from edged.errors import EdgedError, described
from edged.jobs import records
from edged.jobs.progress import JobStopped, ProgressReporter
from edged.jobs.states import JobState
from edged.jobs.worker_env import read_worker_settings
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import open_db
from edged.store.space import disk_full, is_disk_full

EXIT_STOPPED = 75  # EX_TEMPFAIL: try again later
EXIT_DISK_FULL = 73  # EX_CANTCREAT: cannot create output
PR_SET_PDEATHSIG = 1

log = logging.getLogger("edged.jobs.worker")


def during(stage: Optional[str]) -> str:
    return f"during stage {stage}" if stage else "before its first stage"


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def worker_command(settings_file: Path, job_id: str) -> list[str]:
    return [sys.executable, "-m", "edged.jobs.worker", "--settings", str(settings_file),
            "--parent-pid", str(os.getpid()), job_id]


def default_threads() -> int:
    """One fewer torch thread than this process may use cores, at least one: a core is left for the API.

    Measured on the 2-core build machine (`edged bench api`, MobileNetV2 at 32 px, 10 API clients):
    with torch's default of two threads the job trained 29 samples/s, with one 160 samples/s, at the
    same API latency: when one of two OpenMP threads is preempted, the other spins at its barrier.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def lower_priority(nice: int) -> None:
    """Run below the daemon's CPU priority, so the API answers while a job trains on the same cores.

    Called first thing, on the main thread: Linux niceness is per thread, and the threads torch starts
    later inherit it from this one.
    """
    if nice > 0:
        os.nice(nice)


class Termination:
    """SIGTERM sets a flag the progress callback checks between steps (a clean stop, resumable)."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


def die_with_parent(parent_pid: Optional[int]) -> None:
    """Ask Linux to SIGTERM this worker if the daemon dies, so no orphan keeps writing to the job."""
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_job(settings: Settings, job_id: str, termination: Termination) -> int:
    # Heavy (torch): imported after the signal handler is set.
    import torch

    from edged.jobs.execute import execute_job

    torch.set_num_threads(settings.worker_threads or default_threads())

    db = open_db(settings.db_path)
    try:
        job = records.get_job(db, job_id)
        directory = job_dir(settings.data_dir, job_id)
        directory.mkdir(parents=True, exist_ok=True)
        reporter = ProgressReporter(db, job_id, lambda: termination.requested)
        try:
            execute_job(settings, db, BlobStore(settings.blobs_dir), job, directory, reporter)
        except JobStopped as stop:
            if not stop.cancelled:
                log.info("job %s stopped by SIGTERM during %s; it stays resumable", job_id, reporter.stage_name)
                return EXIT_STOPPED
            records.finish_running(db, job_id, JobState.CANCELLED, error=f"cancelled {during(reporter.stage_name)}")
        except Exception as exc:  # any failure of the job is the job's, reported in its row
            if not isinstance(exc, EdgedError):
                with contextlib.suppress(OSError):  # worker.log may be on the very disk that is full
                    traceback.print_exc()
            records.finish_running(db, job_id, JobState.FAILED, error=failure_reason(settings.data_dir, reporter.stage_name, exc))
        return 0
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        log.error("job %s: the data directory is full; its final state is left to the daemon", job_id)
        return EXIT_DISK_FULL
    finally:
        db.close()


def failure_reason(data_dir: Path, stage: Optional[str], exc: Exception) -> str:
    """A failed job's `error`: the stage, then what went wrong (a full disk named as ENOSPC), with the error's
    detail (e.g. the keys a weights file lacks), which the job's row has no other place for."""
    if is_disk_full(exc):
        return f"{during(stage)}: {disk_full(data_dir).message} ({type(exc).__name__}: {exc})"
    if isinstance(exc, EdgedError):
        return f"{during(stage)}: {described(exc)}"
    return f"{during(stage)}: {type(exc).__name__}: {exc}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edged.jobs.worker", description=__doc__)
    parser.add_argument("--settings", type=Path, required=True, help="the daemon's settings, as JSON (no token)")
    parser.add_argument("--parent-pid", type=int, help="the daemon's pid: this worker stops when it dies")
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    termination = Termination()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when its worker stops
    die_with_parent(args.parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = read_worker_settings(args.settings)
    lower_priority(settings.worker_nice)
    return run_job(settings, args.job_id, termination)


if __name__ == "__main__":
    sys.exit(main())

"""The job worker: `python -m edged.jobs.worker --data-dir DIR [--parent-pid PID] [--nice N] [--threads T] JOB_ID`.

A child process of the daemon's job manager, so that a crash, a CUDA error or an OOM kill ends this
process and not the API. It writes the job's events, progress and final state to SQLite itself.
Exit codes: 0 the job reached a final state (succeeded, failed or cancelled); EXIT_STOPPED when a
SIGTERM stopped it between steps, leaving it `running` for the manager to requeue (its work
directory keeps the finished stages); anything else is a crash the manager reports.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Optional

from edged.errors import EdgedError
from edged.jobs import records
from edged.jobs.progress import JobStopped, ProgressReporter
from edged.store.blobs import BlobStore
from edged.store.db import open_db

EXIT_STOPPED = 75  # EX_TEMPFAIL: try again later
PR_SET_PDEATHSIG = 1

log = logging.getLogger("edged.jobs.worker")


def during(stage: Optional[str]) -> str:
    return f"during stage {stage}" if stage else "before its first stage"


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def worker_command(data_dir: Path, job_id: str, nice: int = 0, threads: int = 0) -> list[str]:
    return [sys.executable, "-m", "edged.jobs.worker", "--data-dir", str(data_dir),
            "--parent-pid", str(os.getpid()), "--nice", str(nice), "--threads", str(threads), job_id]


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


def run_job(data_dir: Path, job_id: str, termination: Termination, threads: int = 0) -> int:
    # Heavy (torch): imported after the signal handler is set.
    import torch

    from edged.jobs.pipeline import run_pipeline

    torch.set_num_threads(threads or default_threads())

    db = open_db(data_dir / "edged.db")
    try:
        job = records.get_job(db, job_id)
        directory = job_dir(data_dir, job_id)
        directory.mkdir(parents=True, exist_ok=True)
        reporter = ProgressReporter(db, job_id, lambda: termination.requested)
        try:
            run_pipeline(db, BlobStore(data_dir / "blobs"), job, directory, reporter)
        except JobStopped as stop:
            if not stop.cancelled:
                log.info("job %s stopped by SIGTERM during %s; it stays resumable", job_id, reporter.stage_name)
                return EXIT_STOPPED
            records.finish_running(db, job_id, records.CANCELLED, error=f"cancelled {during(reporter.stage_name)}")
        except EdgedError as exc:
            records.finish_running(db, job_id, records.FAILED, error=f"{during(reporter.stage_name)}: {exc.message}")
        except Exception as exc:  # any failure of the job is the job's, reported in its row
            traceback.print_exc()
            records.finish_running(db, job_id, records.FAILED,
                                   error=f"{during(reporter.stage_name)}: {type(exc).__name__}: {exc}")
        return 0
    finally:
        db.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edged.jobs.worker", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="EDGED_DATA_DIR of the daemon")
    parser.add_argument("--parent-pid", type=int, help="the daemon's pid: this worker stops when it dies")
    parser.add_argument("--nice", type=int, default=0, help="niceness to add (EDGED_WORKER_NICE)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: one fewer than the cores")
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    lower_priority(args.nice)
    termination = Termination()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when its worker stops
    die_with_parent(args.parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_job(args.data_dir, args.job_id, termination, args.threads)


if __name__ == "__main__":
    sys.exit(main())

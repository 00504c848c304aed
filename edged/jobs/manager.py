"""The daemon's job manager: one thread taking queued jobs oldest first, one worker process at a time.

The worker is a separate process (`edged.jobs.worker`), so a crash, CUDA error or OOM kill there
only ends that job: the manager sees the exit status and marks the job `failed` with the reason.
At start-up, and hourly between jobs, jobs that ended more than EDGED_JOB_RETENTION_DAYS ago are
deleted (`edged.jobs.retention`). At start-up, jobs left `running` by a daemon that died are requeued to resume from their work
directory (at most MAX_RESUMES times) or marked `interrupted` with why. Stopping the manager stops
the worker (SIGTERM, a bounded wait, then SIGKILL) and requeues its job, to resume on the next start.
Writing a job's final state is retried with backoff until it lands (a full disk or a locked database
must not leave a job `running` with no worker); the API answers meanwhile, on its own threads.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import sqlite_utils

from edged.jobs import records, retention
from edged.jobs.states import JobState
from edged.jobs.worker import (
    EXIT_DISK_FULL,
    EXIT_STOPPED,
    during,
    job_dir,
    worker_command,
)
from edged.jobs.worker_env import worker_environment, write_worker_settings
from edged.settings import Settings
from edged.store.blobs import BlobStore
from edged.store.db import open_db
from edged.store.space import is_disk_full

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # a submit wakes the manager at once; this bounds the delay otherwise
WORKER_POLL_S = 0.2
MAX_RESUMES = 2
SETTLE_FIRST_RETRY_S, SETTLE_MAX_RETRY_S = 0.5, 30.0  # backoff between attempts to write a final state


class JobManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._next_sweep = 0.0  # when expired jobs are next deleted (time.monotonic())

    def start(self) -> None:
        db = open_db(self.settings.db_path)
        try:
            recover_jobs(db, self.settings)
            self._delete_expired_jobs(db)
        finally:
            db.close()
        self._thread = threading.Thread(target=self._loop, name="edged-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for queued jobs now (called after a submit)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the running worker (its job stays resumable) and the thread, within the shutdown timeout."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.shutdown_timeout_s + 5)

    def _loop(self) -> None:
        db = open_db(self.settings.db_path)
        try:
            while not self._stopping.is_set():
                try:
                    job = records.claim_next(db)
                    if job is not None:
                        self._run(db, job)
                        continue
                    if time.monotonic() >= self._next_sweep:
                        self._delete_expired_jobs(db)
                except Exception:  # e.g. a locked database or a full disk: log, wait, try again
                    log.exception("the job manager hit an error; retrying")
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
        finally:
            db.close()

    def _delete_expired_jobs(self, db: sqlite_utils.Database) -> None:
        """Retention; a failure (a full disk, say) is logged and retried at the next sweep, never fatal."""
        self._next_sweep = time.monotonic() + retention.SWEEP_INTERVAL_S
        try:
            retention.delete_expired_jobs(db, BlobStore(self.settings.blobs_dir), self.settings.data_dir,
                                          self.settings.job_retention_days)
        except Exception:
            log.exception("deleting expired jobs failed; retrying in %.0f s", retention.SWEEP_INTERVAL_S)

    def _run(self, db: sqlite_utils.Database, job: dict[str, Any]) -> None:
        directory = job_dir(self.settings.data_dir, job["id"])
        directory.mkdir(parents=True, exist_ok=True)
        try:
            settings_file = write_worker_settings(self.settings, directory)
            with open(directory / "worker.log", "ab") as worker_log:
                # A new session: Ctrl-C in the daemon's terminal reaches the daemon only, which stops the worker.
                process = subprocess.Popen(worker_command(settings_file, job["id"]), stdout=worker_log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                           env=worker_environment())
        except OSError as exc:
            records.finish_running(db, job["id"], JobState.FAILED, error=f"the worker process could not start: {exc}")
            return
        records.set_worker_pid(db, job["id"], process.pid)
        log.info("job %s: worker %d started", job["id"], process.pid)
        while process.poll() is None:
            if self._stopping.wait(WORKER_POLL_S):
                stop_process(process, self.settings.shutdown_timeout_s)
        self._settle_until_written(db, job["id"], process.returncode)

    def _settle_until_written(self, db: sqlite_utils.Database, job_id: str, code: int) -> None:
        """`_settle`, retried with backoff while the write fails (full disk, locked database); at
        shutdown, one last attempt, then the next start's recovery finds the job `running`."""
        for attempt in itertools.count():
            try:
                self._settle(db, job_id, code)
                return
            except (sqlite3.Error, OSError) as exc:
                if self._stopping.is_set():
                    log.error("job %s: its final state could not be written before shutdown (%s); "
                              "the next start recovers it", job_id, exc)
                    return
                delay = min(SETTLE_FIRST_RETRY_S * 2 ** attempt, SETTLE_MAX_RETRY_S)
                log.warning("job %s: writing its final state failed (%s%s); retrying in %.1f s", job_id, exc,
                            ": the data directory is full" if is_disk_full(exc) else "", delay)
                self._stopping.wait(delay)

    def _settle(self, db: sqlite_utils.Database, job_id: str, code: int) -> None:
        """Record what the worker's exit means, unless the worker recorded a final state itself."""
        job = records.get_job(db, job_id)
        if job["state"] != JobState.RUNNING:
            log.info("job %s: %s", job_id, job["state"])
            return
        if self._stopping.is_set():
            records.requeue(db, job_id, f"the daemon stopped {during(job['stage'])}; the job resumes "
                                        "when it starts again")
            return
        reason = f"the worker process {describe_exit(code)} {during(job['stage'])}"
        if code == -signal.SIGKILL:
            reason += " (SIGKILL: often the kernel's out-of-memory killer; lower batch_size or memory_budget_mb)"
        reason += f"; its output is in {job_dir(self.settings.data_dir, job_id) / 'worker.log'}"
        records.finish_running(db, job_id, JobState.FAILED, error=reason)
        log.warning("job %s failed: %s", job_id, reason)


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by signal {signal.Signals(-code).name}"
    if code == EXIT_STOPPED:
        return "was stopped by SIGTERM"
    if code == EXIT_DISK_FULL:
        return "stopped because the data directory is full (ENOSPC; free space there and submit the job again)"
    return f"exited with code {code}"


def stop_process(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM (the worker stops between steps), then SIGKILL after `timeout_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("worker %d did not stop in %.0f s; killing it", process.pid, timeout_s)
        process.kill()
        process.wait()


def recover_jobs(db: sqlite_utils.Database, settings: Settings) -> None:
    """Jobs found `running` at start-up lost their worker: resume them, or say why they cannot be."""
    for job in records.jobs_in_state(db, JobState.RUNNING):
        _stop_orphan(job)
        reason = _unresumable_reason(db, settings, job)
        if reason is not None:
            records.interrupt(db, job["id"], reason)
            log.warning("job %s interrupted: %s", job["id"], reason)
            continue
        resumes = records.count_events(db, job["id"], "resumed")
        records.requeue(db, job["id"], f"the daemon restarted after losing the worker {during(job['stage'])}; "
                                       f"resume {resumes + 1} of {MAX_RESUMES}", event_type="resumed")
        log.info("job %s requeued to resume from its work directory", job["id"])


def _unresumable_reason(db: sqlite_utils.Database, settings: Settings, job: dict[str, Any]) -> Optional[str]:
    if job["dataset_id"] is None:
        return "its dataset was deleted"
    rows = list(db.query("SELECT blob FROM datasets WHERE id = ?", [job["dataset_id"]]))
    if not rows or not BlobStore(settings.blobs_dir).exists(rows[0]["blob"]):
        return f"its dataset {job['dataset_id']} is missing from the store"
    if not job_dir(settings.data_dir, job["id"]).is_dir():
        return f"its work directory {job_dir(settings.data_dir, job['id'])} is gone"
    resumes = records.count_events(db, job["id"], "resumed")
    if resumes >= MAX_RESUMES:
        return (f"its worker was lost {resumes + 1} times (last {during(job['stage'])}); "
                f"not resumed again after {MAX_RESUMES} resumes")
    return None


def _stop_orphan(job: dict[str, Any]) -> None:
    """A worker that outlived its daemon (only where the kernel cannot tie it to the daemon) is stopped."""
    pid = job["worker_pid"]
    if pid is None or not _is_worker_of(pid, job["id"]):
        return
    log.warning("job %s: stopping orphaned worker %d", job["id"], pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _is_worker_of(pid: int, job_id: str) -> bool:
    """Whether `pid` is a live worker for `job_id` (not a reused pid of some other program)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"edged.jobs.worker" in cmdline and job_id.encode() in cmdline

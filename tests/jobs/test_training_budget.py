"""A job's own memory_budget_mb holds its training, measured from outside the worker process (its resident set and
high-water mark in /proc, sampled by this test while the job runs), against a real `edged serve`."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest
from daemon import AUTH, Daemon
from jobs_helpers import digits_npz, wait_for

from edged.calibrate.memory import cpu_peak_measurable

pytestmark = pytest.mark.skipif(not cpu_peak_measurable(), reason="no resettable peak RSS (/proc/self/clear_refs)")

# 4 pre-norm blocks over 256 tokens of width 32: saved activations large next to their compute
JOB = {"model": "edged_jobs_test_model:block_vit", "method": "taskedge", "epochs": 1, "budget": 0.01, "lr": 0.03,
       "head_lr": 0.01, "image_size": 16, "publish": False}


class WorkerPeak:
    """The job's worker's peak resident set in MiB, sampled from /proc every few ms until the worker exits: the
    largest VmRSS or VmHWM seen (the worker resets its VmHWM before each measurement of its own, so one reading
    at the end would not do)."""

    def __init__(self, daemon: Daemon, job_id: str) -> None:
        self.daemon, self.job_id, self.mb = daemon, job_id, 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        pid = None
        while pid is None and not self.done.wait(0.01):
            pid = self.daemon.worker_pid(self.job_id)
        status = Path(f"/proc/{pid}/status")
        while not self.done.is_set():
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
            except (FileNotFoundError, ProcessLookupError):
                return  # the worker exited
            self.mb = max(self.mb, *(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM") if k in fields))
            self.done.wait(0.003)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return self.mb


@pytest.fixture(scope="module")
def budget_daemon(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("training-budget"))
    daemon.start()
    dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=60,
                         files={"file": ("digits.npz", digits_npz(100))}).json()["id"]
    yield daemon, dataset
    daemon.stop()


def run_measured(daemon: Daemon, dataset: str, job: dict) -> tuple[dict, float]:
    """The job run to its end, and its worker's peak resident set in MiB."""
    submitted = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH, timeout=60, json={**job, "dataset": dataset})
    assert submitted.status_code == 202, submitted.text
    peak = WorkerPeak(daemon, submitted.json()["id"])
    done = wait_for(daemon.job(submitted.json()["id"]), lambda j: j["state"] in ("succeeded", "failed"),
                    timeout_s=240)
    return done, peak.stop()


@pytest.fixture(scope="module")
def smallest_budget_mb(budget_daemon) -> int:
    """What an impossible budget's failure names as the smallest budget that would work."""
    daemon, dataset = budget_daemon
    job, _ = run_measured(daemon, dataset, {**JOB, "batch_size": 4, "memory_budget_mb": 100})
    assert job["state"] == "failed" and "during stage train" in job["error"], job
    named = re.search(r"the smallest that would work is (\d+) MB \((\w+)@1", job["error"])
    assert named and named.group(2) == "checkpoint_blocks", job["error"]
    return int(named.group(1))


def test_an_impossible_budget_fails_the_job_naming_the_smallest_that_would_work(smallest_budget_mb):
    assert smallest_budget_mb > 100  # the Python runtime and torch alone take more


def test_a_job_trains_inside_its_memory_budget_measured_from_outside(budget_daemon, smallest_budget_mb):
    """A budget 40 MiB above the smallest: unbudgeted, the job's 64-sample steps go past it; budgeted, the
    worker stays inside, with recomputation or micro-batches (and the job still trains)."""
    daemon, dataset = budget_daemon
    budget = smallest_budget_mb + 40
    free, free_peak = run_measured(daemon, dataset, {**JOB, "batch_size": 64})
    held, held_peak = run_measured(daemon, dataset, {**JOB, "batch_size": 64, "memory_budget_mb": budget})
    print(f"budget {budget} MiB: worker peak {held_peak:.0f} MiB with it, {free_peak:.0f} MiB without; "
          f"plan {held['metrics']['training_memory']}")
    assert free["state"] == held["state"] == "succeeded", (free, held)
    assert free["metrics"]["training_memory"]["budget_mb"] is None and free_peak > budget
    plan = held["metrics"]["training_memory"]
    assert plan["budget_mb"] == budget and (plan["policy"], plan["micro_batch"]) != ("none", 64)
    assert held_peak <= budget

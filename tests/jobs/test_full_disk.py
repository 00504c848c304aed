"""A data directory that fills up mid-training: the job ends `failed` with ENOSPC in its reason, the
daemon keeps answering, and an upload gets 507 leaving nothing behind. The data directory is a real,
small tmpfs (Linux, root), filled by a real file; `edged serve` runs as a real process."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, digits_npz, wait_for

from edged.jobs.states import FINAL_STATES



def _exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")  # exited, not yet reaped
    except FileNotFoundError:
        return True


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_disk_filling_mid_training_fails_the_job_with_enospc_and_uploads_get_507(tmp_path, small_data_dir, fill_until_full):
    daemon = Daemon(tmp_path)
    assert daemon.data_dir == small_data_dir
    daemon.start()
    try:
        dataset = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH,
                             files={"file": ("digits.npz", digits_npz(600))}).json()
        job_id = httpx.post(f"{daemon.url}/v1/jobs", headers=AUTH,
                            json={**FAST_JOB, "dataset": dataset["id"], "epochs": 200}).json()["id"]
        daemon.next_event(job_id, "epoch")  # in train, checkpointing each epoch
        worker = daemon.worker_pid(job_id)
        fill_until_full(small_data_dir / "filler")

        wait_for(lambda: {"exited": _exited(worker)}, lambda w: w["exited"], timeout_s=120)
        # The disk is still full: the daemon answers, and an upload is refused with 507, leaving nothing.
        assert httpx.get(f"{daemon.url}/healthz", timeout=10).status_code == 200
        blobs_before = _files(small_data_dir / "blobs")
        refused = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=30,
                             files={"file": ("more.npz", digits_npz(600, seed=1))})
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["code"] == "insufficient_storage"
        assert error["message"].startswith("the data directory is full (ENOSPC: ")
        assert "MiB free" in error["message"] and "DELETE /v1/jobs/{id}" in error["message"]
        assert _files(small_data_dir / "blobs") == blobs_before  # no blob, no temporary file
        assert [d["id"] for d in daemon.get("/v1/datasets").json()] == [dataset["id"]]  # no row

        # The job's final state is written (now, or once space is freed: the manager retries).
        (small_data_dir / "filler").unlink()
        job = wait_for(daemon.job(job_id), lambda j: j["state"] in FINAL_STATES, timeout_s=60)
        assert job["state"] == "failed" and "ENOSPC" in job["error"] and "during stage train" in job["error"], job
        accepted = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, timeout=30,
                              files={"file": ("more.npz", digits_npz(600, seed=1))})
        assert accepted.status_code == 201, accepted.text
    finally:
        daemon.stop(signal.SIGTERM)

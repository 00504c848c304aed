"""Stored bytes are checked against their sha256 when read: a flipped byte in a dataset fails the job as
corruption (not as a bad upload), a flipped byte in an artifact is refused instead of served. Real app,
real SQLite file, real worker processes."""

from __future__ import annotations

from pathlib import Path

from jobs_helpers import FAST_JOB, digits_npz, wait_for

from edged.jobs.states import FINAL_STATES


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _run_job(client, auth, dataset: str) -> dict:
    response = client.post("/v1/jobs", headers=auth, json={**FAST_JOB, "dataset": dataset})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    return wait_for(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth).json(),
                    lambda j: j["state"] in FINAL_STATES, timeout_s=120)


def test_corrupt_dataset_fails_the_job_and_corrupt_artifact_is_refused(client, auth, blobs):
    upload = digits_npz(300)
    dataset = client.post("/v1/datasets", headers=auth, files={"file": ("digits.npz", upload)}).json()
    _flip_a_byte(blobs.path(dataset["sha256"]))

    job = _run_job(client, auth, dataset["id"])
    assert job["state"] == "failed" and job["stage"] == "validate", job
    assert f"stored dataset {dataset['id']} is corrupt: sha256 " in job["error"]
    assert f"!= {dataset['sha256']}" in job["error"] and "upload digits.npz again" in job["error"]
    assert "npz" not in job["error"].split(";")[0]  # the upload is not blamed: it was fine

    # The same bytes again repair the stored copy; a job on it now succeeds.
    again = client.post("/v1/datasets", headers=auth, files={"file": ("digits.npz", upload)})
    assert again.status_code == 201 and again.json()["id"] == dataset["id"]
    job = _run_job(client, auth, dataset["id"])
    assert job["state"] == "succeeded", job

    url = f"/v1/jobs/{job['id']}/artifacts/delta.safetensors"
    assert client.get(url, headers=auth).status_code == 200
    artifact = next(a for a in client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json()
                    if a["name"] == "delta.safetensors")
    _flip_a_byte(blobs.path(artifact["sha256"]))
    refused = client.get(url, headers=auth)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "corrupt"
    assert error["message"].startswith(f"artifact delta.safetensors of job {job['id']} is corrupt in the store: sha256 ")
    assert f"!= {artifact['sha256']}" in error["message"] and error["detail"]["expected_sha256"] == artifact["sha256"]

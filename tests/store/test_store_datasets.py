"""Datasets in the store: decode first, dedupe by content, delete guarded by active jobs, reload."""

from __future__ import annotations

import os

import pytest
import torch

from edged.errors import Conflict, Corrupt, InvalidInput, NotFound
from edged.jobs import records
from edged.store.datasets import delete_dataset, get_dataset, list_datasets, load_task, save_dataset
from edged.store.db import utc_now


def _files_under(path):
    return [f for _, _, files in os.walk(path) for f in files]


def test_save_then_load_returns_the_same_task(db, blobs, uploads):
    data = uploads.zip(uploads.image_folders(per_class=3))
    row = save_dataset(db, blobs, "digits.zip", data, name="digits")
    assert row["name"] == "digits" and row["kind"] == "image" and row["format"] == "zip"
    assert row["num_samples"] == 6 and row["classes"] == ["cat", "dog"] and row["shape"] == [1, 8, 8]
    assert row["size_bytes"] == len(data) and blobs.exists(row["blob"])
    assert row.pop("already_stored") is False
    assert get_dataset(db, row["id"]) == row and list_datasets(db) == [row]
    task = load_task(db, blobs, row["id"])
    assert task.x.shape == (6, 1, 8, 8) and task.x.dtype == torch.uint8 and task.classes == ["cat", "dog"]


def test_same_bytes_give_the_same_dataset(db, blobs):
    first = save_dataset(db, blobs, "a.csv", b"f,label\n1,a\n2,b\n")
    again = save_dataset(db, blobs, "renamed.csv", b"f,label\n1,a\n2,b\n", name="other")
    assert again["id"] == first["id"] and len(list_datasets(db)) == 1
    assert (first["already_stored"], again["already_stored"], again["name"]) == (False, True, "a.csv")


def test_rejected_upload_stores_nothing(db, blobs, settings):
    with pytest.raises(InvalidInput):
        save_dataset(db, blobs, "a.csv", b"f,label\n1,a\n2,a\n")
    assert list_datasets(db) == [] and _files_under(settings.blobs_dir) == []


def test_delete_removes_row_and_blob(db, blobs):
    row = save_dataset(db, blobs, "a.csv", b"f,label\n1,a\n2,b\n")
    delete_dataset(db, blobs, row["id"])
    assert list_datasets(db) == [] and not blobs.exists(row["blob"])
    with pytest.raises(NotFound):
        get_dataset(db, row["id"])


def _job(db, job_id, dataset_id, state):
    db["jobs"].insert(
        {"id": job_id, "state": state, "model": "m", "method": "taskedge", "dataset_id": dataset_id, "created_at": utc_now()}
    )


def _delete_unless_in_use(db, blobs, dataset_id):
    """What DELETE /v1/datasets/{id} does: the job queue refuses while a job needs the dataset, then the store deletes."""
    records.refuse_if_dataset_in_use(db, dataset_id)
    delete_dataset(db, blobs, dataset_id)


@pytest.mark.parametrize("state", ["queued", "running"])
def test_delete_is_refused_while_a_job_uses_the_dataset(db, blobs, state):
    row = save_dataset(db, blobs, "a.csv", b"f,label\n1,a\n2,b\n")
    _job(db, "j1", row["id"], state)
    with pytest.raises(Conflict) as caught:
        _delete_unless_in_use(db, blobs, row["id"])
    assert caught.value.detail == {"jobs": ["j1"]}
    assert get_dataset(db, row["id"]) and blobs.exists(row["blob"])


def test_finished_jobs_keep_their_row_when_the_dataset_goes(db, blobs):
    row = save_dataset(db, blobs, "a.csv", b"f,label\n1,a\n2,b\n")
    _job(db, "j1", row["id"], "succeeded")
    _delete_unless_in_use(db, blobs, row["id"])
    assert db["jobs"].get("j1")["dataset_id"] is None


def test_a_corrupt_stored_dataset_is_reported_as_such_and_a_new_upload_repairs_it(db, blobs):
    csv = b"f1,f2,label\n" + b"".join(b"%d,%d,%s\n" % (i, i % 3, b"ab"[i % 2:i % 2 + 1]) for i in range(20))
    row = save_dataset(db, blobs, "t.csv", csv)
    stored = blobs.path(row["blob"])
    stored.write_bytes(stored.read_bytes().replace(b"17,2", b"71,2"))  # still a valid CSV, wrong data
    with pytest.raises(Corrupt) as corrupt:
        load_task(db, blobs, row["id"])
    assert corrupt.value.message.startswith(f"stored dataset {row['id']} is corrupt: sha256 ")
    assert f"!= {row['sha256']}; upload t.csv again" in corrupt.value.message
    assert save_dataset(db, blobs, "t.csv", csv)["id"] == row["id"]  # the same bytes again
    assert len(load_task(db, blobs, row["id"])) == 20 and blobs.is_intact(row["blob"])

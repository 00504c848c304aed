"""A full disk is recognised in every shape it takes, from real failures on a real full file system:
our own writes (ENOSPC), SQLite (SQLITE_FULL), safetensors; and an upload on it stores nothing."""

from __future__ import annotations

import errno
import sqlite3

import pytest
import torch
from safetensors.torch import save_file

from edged.errors import InsufficientStorage, InvalidInput
from edged.store.datasets import list_datasets, save_dataset
from edged.store.space import disk_full, is_disk_full


def _raised(action) -> BaseException:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("the write succeeded on a full file system")


def test_every_shape_of_a_full_disk_is_recognised(small_data_dir, fill_until_full):
    db = sqlite3.connect(str(small_data_dir / "full.db"), isolation_level=None)
    db.execute("CREATE TABLE t (x BLOB)")
    fill_until_full(small_data_dir / "filler")

    own = _raised(lambda: (small_data_dir / "more").write_bytes(bytes(2**20)))
    assert isinstance(own, OSError) and own.errno == errno.ENOSPC and is_disk_full(own)
    sqlite_full = _raised(lambda: db.execute("INSERT INTO t VALUES (?)", [bytes(2**20)]))
    assert isinstance(sqlite_full, sqlite3.OperationalError) and is_disk_full(sqlite_full)
    tensors = _raised(lambda: save_file({"w": torch.zeros(2**18)}, str(small_data_dir / "w.safetensors")))
    assert is_disk_full(tensors), repr(tensors)
    wrapped = _raised(lambda: _reraise_as(RuntimeError("checkpoint failed"), own))
    assert is_disk_full(wrapped)  # found through __cause__
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied")) and not is_disk_full(ValueError("x"))

    error = disk_full(small_data_dir)
    assert isinstance(error, InsufficientStorage) and error.status == 507 and error.code == "insufficient_storage"
    assert error.message.startswith("the data directory is full (ENOSPC: ") and error.detail["free_bytes"] < 2**20
    db.close()


def _reraise_as(outer: Exception, cause: BaseException) -> None:
    raise outer from cause


def test_an_upload_on_a_full_disk_stores_nothing(small_data_dir, fill_until_full, db, blobs, settings):
    csv = b"f1,f2,label\n" + b"".join(b"%d,%d,%s\n" % (i, i % 3, b"ab"[i % 2:i % 2 + 1]) for i in range(20))
    fill_until_full(small_data_dir / "filler")
    with pytest.raises(InsufficientStorage, match="the data directory is full"):
        save_dataset(db, blobs, "t.csv", csv)
    (small_data_dir / "filler").unlink()
    assert list_datasets(db) == []
    assert [p for p in settings.blobs_dir.rglob("*") if p.is_file()] == []  # no blob, no temporary file
    with pytest.raises(InvalidInput):  # a rejected upload on a full disk is still a 422, not a 507
        fill_until_full(small_data_dir / "filler")
        save_dataset(db, blobs, "bad.csv", b"f,label\n1,a\n2,a\n")
    (small_data_dir / "filler").unlink()
    assert save_dataset(db, blobs, "t.csv", csv)["num_samples"] == 20

"""Datasets: uploads decoded, validated, stored as a blob of the original bytes plus a row.

The original bytes are what is kept (not tensors), so a dataset is re-decoded by `load_task` in the
worker process with exactly the code that validated it.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import sqlite_utils

from edged.data.formats import decode_as, detect_format
from edged.data.task import TaskData
from edged.data.upload_limits import UploadLimits
from edged.errors import Corrupt, InvalidInput, NotFound
from edged.store.blobs import BlobStore, sha256_bytes
from edged.store.db import utc_now
from edged.store.space import disk_full, is_disk_full

MAX_NAME_LENGTH = 200
# Unicode categories refused in names: control, format (e.g. bidi overrides), surrogate, private use, line breaks.
REFUSED_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
NAME_HINT = (
    f"1 to {MAX_NAME_LENGTH} printable characters (letters, digits, punctuation, symbols, spaces); "
    "no control or format characters"
)


def save_dataset(
    db: sqlite_utils.Database,
    blobs: BlobStore,
    filename: str,
    data: bytes,
    name: Optional[str] = None,
    limits: Optional[UploadLimits] = None,
) -> dict[str, Any]:
    """Decode and validate an upload, then store it; the same bytes again return the existing row (its name kept),
    marked `already_stored`.

    Decoding comes first: a rejected upload raises and leaves neither a row nor a blob behind; so
    does a full disk (InsufficientStorage). Uploading a dataset's bytes again repairs its stored copy
    if that went missing or corrupt.
    """
    name = check_dataset_name(name or filename)
    digest = sha256_bytes(data)
    existing = _row_by_sha256(db, digest)
    if existing is not None:
        with _nothing_partial_on_a_full_disk(blobs, digest):
            blobs.put_bytes(data)
        return {**existing, "already_stored": True}
    fmt = detect_format(filename)
    task = decode_as(fmt, filename, data, limits or UploadLimits())
    row = _row_for(task, digest, fmt, name, len(data))
    with _nothing_partial_on_a_full_disk(blobs, digest):
        blobs.put_bytes(data)
        try:
            db.table("datasets").insert(row)
        except sqlite3.IntegrityError:
            # The same bytes were stored concurrently: the blob is theirs too, keep it.
            existing = _row_by_sha256(db, digest)
            if existing is None:
                raise
            return {**existing, "already_stored": True}
    return {**_decoded(row), "already_stored": False}


def check_dataset_name(name: str) -> str:
    """`name` if it can be stored and shown safely, else InvalidInput naming the first refused character."""
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidInput(
            f"a dataset name must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}"
            + (" (the file name is the default; pass a shorter 'name')" if name else ""),
            detail={"accepted": NAME_HINT},
        )
    for at, char in enumerate(name):
        if unicodedata.category(char) in REFUSED_NAME_CATEGORIES:
            raise InvalidInput(
                f"dataset name {name[:40]!r} holds the control character U+{ord(char):04X} at position {at}",
                detail={"accepted": NAME_HINT},
            )
    return name


@contextmanager
def _nothing_partial_on_a_full_disk(blobs: BlobStore, digest: str) -> Iterator[None]:
    """A full disk becomes InsufficientStorage, and a blob stored here without its row is removed
    (put_bytes already removes its temporary file; the row's insert is one transaction)."""
    stored_before = blobs.exists(digest)
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        if not stored_before:
            blobs.delete(digest)
        raise disk_full(blobs.root.parent) from exc


def _row_for(task: TaskData, digest: str, fmt: str, name: str, size_bytes: int) -> dict[str, Any]:
    shape = None if isinstance(task.x, list) else list(task.x.shape[1:])  # one sample's shape
    return {
        "id": uuid.uuid4().hex,
        "name": name,
        "sha256": digest,
        "kind": task.kind,
        "format": fmt,
        "num_samples": len(task),
        "classes": json.dumps(task.classes),
        "shape": json.dumps(shape),
        "blob": digest,
        "size_bytes": size_bytes,
        "created_at": utc_now(),
    }


def get_dataset(db: sqlite_utils.Database, dataset_id: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM datasets WHERE id = ?", [dataset_id]))
    if not rows:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    return _decoded(rows[0])


def list_datasets(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return [_decoded(row) for row in db.query("SELECT * FROM datasets ORDER BY created_at DESC, rowid DESC")]


def delete_dataset(db: sqlite_utils.Database, blobs: BlobStore, dataset_id: str) -> None:
    """Delete a dataset and its blob; finished jobs that used it keep their row, with `dataset_id` NULL.

    Whether a queued or running job still needs it is the job queue's question, asked first by the
    caller (`edged.jobs.records.refuse_if_dataset_in_use`).
    """
    row = get_dataset(db, dataset_id)
    with db.atomic():
        db.execute("DELETE FROM datasets WHERE id = ?", [dataset_id])
    blobs.delete(row["blob"])


def load_task(
    db: sqlite_utils.Database, blobs: BlobStore, dataset_id: str, limits: Optional[UploadLimits] = None
) -> TaskData:
    """Re-decode a stored dataset (validated at upload, so by default without size limits)."""
    row = get_dataset(db, dataset_id)
    try:
        with blobs.open(row["blob"]) as f:
            data = f.read()
    except Corrupt as exc:
        raise Corrupt(f"stored dataset {dataset_id} is corrupt: sha256 {exc.detail['actual_sha256']} != "
                      f"{row['sha256']}; upload {row['name']} again (its bytes repair the stored copy) and "
                      "submit a new job", detail={**exc.detail, "dataset": dataset_id}) from None
    return decode_as(row["format"], row["name"], data, limits or UploadLimits.trusted())


def _row_by_sha256(db: sqlite_utils.Database, digest: str) -> Optional[dict[str, Any]]:
    rows = list(db.query("SELECT * FROM datasets WHERE sha256 = ?", [digest]))
    return _decoded(rows[0]) if rows else None


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "classes": json.loads(row["classes"]), "shape": json.loads(row["shape"])}

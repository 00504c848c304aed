"""Content-addressed blobs with atomic writes."""

from __future__ import annotations

import hashlib
import os

import pytest

from edged.errors import Corrupt, InvalidInput, NotFound
from edged.store.blobs import BlobStore


def test_put_bytes_is_content_addressed(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.path(digest) == tmp_path / digest[:2] / digest[2:]
    assert store.exists(digest)
    with store.open(digest) as f:
        assert f.read() == b"hello"
    assert store.put_bytes(b"hello") == digest  # again: same name, no second file
    assert sum(len(files) for _, _, files in os.walk(tmp_path)) == 1


def test_put_file_streams_and_matches_put_bytes(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # more than one chunk
    store = BlobStore(tmp_path / "blobs")
    digest = store.put_file(source)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert store.path(digest).read_bytes() == source.read_bytes()


def test_delete_and_missing_blobs(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b"x")
    store.delete(digest)
    assert not store.exists(digest)
    store.delete(digest)  # deleting twice is fine
    with pytest.raises(NotFound):
        store.open(digest)


def test_blob_names_cannot_escape_the_store(tmp_path):
    with pytest.raises(InvalidInput):
        BlobStore(tmp_path).path("../" + "a" * 61)


def test_a_write_interrupted_before_rename_leaves_no_blob_and_no_temp_file(tmp_path, monkeypatch):
    """Simulate a crash at fsync: the final name never appears half-written, the temp file is removed."""
    store = BlobStore(tmp_path)

    def failing_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk gone"):
        store.put_bytes(b"payload")
    monkeypatch.undo()
    digest = hashlib.sha256(b"payload").hexdigest()
    assert not store.exists(digest)
    assert [f for _, _, files in os.walk(tmp_path) for f in files] == []
    assert store.put_bytes(b"payload") == digest and store.path(digest).read_bytes() == b"payload"


def test_writes_go_through_a_temp_file_renamed_into_place(tmp_path, monkeypatch):
    """The final path is only ever created by os.replace from a fsynced temp file in the same directory."""
    store = BlobStore(tmp_path)
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])

    def replace(src, dst):
        assert os.path.dirname(src) == os.path.dirname(dst) and os.path.basename(src).startswith(".tmp-")
        assert not os.path.exists(dst)
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    store.put_bytes(b"data")
    assert events.index("fsync") < events.index("replace") < len(events) - 1  # file fsync, rename, dir fsync
    assert events[-1] == "fsync"


def _flip_a_byte(path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_reads_are_verified_against_the_digest(tmp_path):
    store = BlobStore(tmp_path)
    data = os.urandom(2 * 1024 * 1024 + 3)
    digest = store.put_bytes(data)
    store.verify(digest)
    with store.open(digest) as f:  # chunked reads: checked when the end is reached
        assert b"".join(iter(lambda: f.read(4096), b"")) == data
    _flip_a_byte(store.path(digest), offset=1024 * 1024)
    for read in (lambda f: f.read(), lambda f: b"".join(iter(lambda: f.read(65536), b""))):
        with store.open(digest) as f, pytest.raises(Corrupt) as corrupt:
            read(f)
        assert corrupt.value.status == 409 and corrupt.value.code == "corrupt"
        assert f"!= {digest}" in corrupt.value.message
        assert corrupt.value.detail["actual_sha256"] == hashlib.sha256(store.path(digest).read_bytes()).hexdigest()
    assert not store.is_intact(digest)


def test_storing_the_same_bytes_again_repairs_a_corrupt_or_missing_copy(tmp_path):
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b"hello world")
    _flip_a_byte(store.path(digest))
    assert store.put_bytes(b"hello world") == digest and store.is_intact(digest)
    os.remove(store.path(digest))
    source = tmp_path / "source.bin"
    source.write_bytes(b"hello world")
    assert store.put_file(source) == digest and store.path(digest).read_bytes() == b"hello world"

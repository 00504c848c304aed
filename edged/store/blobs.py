"""Content-addressed blobs: bytes stored under root/ab/cdef... named by their SHA-256.

Writes are atomic: a temporary file in the destination directory is written and fsynced, renamed
over the final name (os.replace), and the directory is fsynced, so after a power loss a blob is
either absent or complete, never partial. Reads are verified: `open` hashes the bytes as they are
read and raises Corrupt at the end if they no longer match the blob's name (bit rot, a bad flash
block), so corrupt data is reported as such instead of being trained on or served.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from collections.abc import Iterable
from typing import BinaryIO, Union

from edged.errors import Corrupt, InvalidInput, NotFound

CHUNK_BYTES = 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise InvalidInput(f"{digest!r} is not a blob name", detail={"accepted": "64 lowercase hex digits"})
        return self.root / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_bytes(self, data: bytes) -> str:
        """Store `data`, returning its SHA-256; storing the same bytes again writes nothing, unless
        the stored copy is missing or corrupt: then these bytes repair it."""
        digest = sha256_bytes(data)
        if not self.is_intact(digest):
            self._write_atomically(digest, [data])
        return digest

    def put_file(self, source: Union[str, Path]) -> str:
        """Store a file's bytes (hashed first, then copied), returning its SHA-256."""
        hasher = hashlib.sha256()
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        if not self.is_intact(digest):
            with open(source, "rb") as f:
                self._write_atomically(digest, iter(lambda: f.read(CHUNK_BYTES), b""))
        return digest

    def open(self, digest: str) -> VerifiedReader:
        """A reader of the blob that raises Corrupt on reaching the end if the bytes do not match."""
        try:
            return VerifiedReader(open(self.path(digest), "rb"), digest)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from {self.root}") from None

    def verify(self, digest: str) -> None:
        """Read the blob through once (a chunk at a time); NotFound if missing, Corrupt if changed."""
        with self.open(digest) as reader:
            while reader.read(CHUNK_BYTES):
                pass

    def is_intact(self, digest: str) -> bool:
        try:
            self.verify(digest)
        except (NotFound, Corrupt):
            return False
        return True

    def delete(self, digest: str) -> None:
        """Remove a blob if present (deleting a missing blob is not an error)."""
        try:
            os.remove(self.path(digest))
        except FileNotFoundError:
            return
        fsync_dir(self.path(digest).parent)

    def _write_atomically(self, digest: str, chunks: Iterable[bytes]) -> None:
        final = self.path(digest)
        if not final.parent.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(final.parent.parent)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as tmp:
                for chunk in chunks:
                    hasher.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                os.fsync(tmp.fileno())
            if hasher.hexdigest() != digest:  # the source changed between hashing and copying
                raise InvalidInput(f"content changed while it was being stored as blob {digest}")
            os.replace(tmp_name, final)
        except BaseException:
            try:
                os.remove(tmp_name)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(final.parent)


class VerifiedReader:
    """A blob's file, hashed as it is read: reading to the end checks the digest (no second read)."""

    def __init__(self, file: BinaryIO, digest: str) -> None:
        self._file = file
        self._digest = digest
        self._hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._hasher.update(data)
        if not data or size is None or size < 0:  # the end of the file: everything has been hashed
            self._check()
        return data

    def _check(self) -> None:
        actual = self._hasher.hexdigest()
        if actual != self._digest:
            raise Corrupt(f"blob {self._file.name} is corrupt: sha256 {actual} != {self._digest}",
                          detail={"expected_sha256": self._digest, "actual_sha256": actual})

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable (POSIX: the directory entry is data of the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

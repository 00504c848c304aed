"""Reading zip and tar uploads safely, member by member, without extracting anything to disk.

Rejected: members with absolute paths, `..` components or backslashes, links and device files,
more than `max_archive_files` members, more than `max_unpacked_bytes` in total (checked against the
sizes the archive declares AND the bytes actually read, so a lying header cannot get past), and
truncated or corrupt archives. Directories, `__MACOSX/` and dot-files (OS litter) are skipped.

`archive_members` lists the members (headers only); each `Member` is then read on its own, so at most
one member's bytes are in memory at a time, and reading it counts against the unpacked limit.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO

from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput, TooLarge

CHUNK_BYTES = 1024 * 1024
# What reading a member can raise; RuntimeError is zipfile's answer to encrypted members.
READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, RuntimeError)


class _Budget:
    """Counts members and unpacked bytes against the limits, naming the archive when exceeded."""

    def __init__(self, source: str, limits: UploadLimits) -> None:
        self.source, self.limits = source, limits
        self.files = 0
        self.declared = 0
        self.bytes = 0

    def add_file(self, name: str, declared_size: int) -> None:
        self.files += 1
        if self.files > self.limits.max_archive_files:
            raise TooLarge(
                f"{self.source}: more than {int(self.limits.max_archive_files)} files in the archive",
                detail={"limit_files": self.limits.max_archive_files},
            )
        self.declared += declared_size
        self._check(name, self.declared)

    def count(self, name: str, nbytes: int) -> None:
        """Bytes actually read, so a lying header cannot make it read past the limit."""
        self.bytes += nbytes
        self._check(name, self.bytes)

    def _check(self, name: str, total: float) -> None:
        if total > self.limits.max_unpacked_bytes:
            raise TooLarge(
                f"{self.source}: unpacks to more than {self.limits.max_unpacked_mb:g} MiB (at {name}); "
                "is it a decompression bomb? Accepted: archives within EDGED_MAX_UNPACKED_MB",
                detail={"limit_unpacked_mb": self.limits.max_unpacked_mb},
            )


class _CountedStream(io.RawIOBase):
    """A member's stream whose reads are counted against the unpacked limit."""

    def __init__(self, stream: IO[bytes], name: str, budget: _Budget) -> None:
        self._stream, self._name, self._budget = stream, name, budget

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        chunk = self._stream.read(CHUNK_BYTES if size is None or size < 0 else min(size, CHUNK_BYTES))
        self._budget.count(self._name, len(chunk))
        return chunk

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@dataclass(frozen=True)
class Member:
    """One regular file of an archive: its path, the size its header declares, and how to read it."""

    source: str
    name: str
    size: int
    _open: Callable[[], IO[bytes] | None] = field(repr=False)
    _budget: _Budget = field(repr=False)

    @contextmanager
    def header_stream(self) -> Iterator[IO[bytes]]:
        """A seekable stream for reading the member's header only: not counted (the declared size bounds it)."""
        with self._reading():
            stream = self._opened()
            with stream:
                yield stream

    @contextmanager
    def stream(self) -> Iterator[io.RawIOBase]:
        """A stream over the whole member, its reads counted against the unpacked limit."""
        with self._reading(), self._opened() as raw:
            yield _CountedStream(raw, self.name, self._budget)

    def read(self) -> bytes:
        with self.stream() as stream:
            chunks = []
            while chunk := stream.read(CHUNK_BYTES):
                chunks.append(chunk)
            return b"".join(chunks)

    def _opened(self) -> IO[bytes]:
        stream = self._open()
        if stream is None:
            raise InvalidInput(f"{self.source}: {self.name} has no readable content")
        return stream

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except READ_ERRORS as exc:
            raise InvalidInput(
                f"{self.source}: cannot read {self.name} (truncated, corrupt or encrypted?): {exc}"
            ) from None


def check_member_path(source: str, name: str) -> None:
    """Reject member names that could point outside the archive's own tree."""
    path = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise InvalidInput(
            f"{source}: unsafe path {name!r} in the archive",
            detail={"accepted": "relative paths like <class>/<image> without '..', '/' or '\\' prefixes"},
        )


def is_litter(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)


@contextmanager
def zip_members(source: str, data: bytes, limits: UploadLimits) -> Iterator[list[Member]]:
    """The regular files of a zip archive, checked from the central directory before any is read."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInput(f"{source}: not a readable zip archive (truncated or corrupt?): {exc}") from None
    budget, members = _Budget(source, limits), []
    with archive:
        for info in archive.infolist():
            check_member_path(source, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidInput(f"{source}: {info.filename} is a symbolic link; only regular files are accepted")
            if info.is_dir() or is_litter(info.filename):
                continue
            budget.add_file(info.filename, info.file_size)
            members.append(Member(source, info.filename, info.file_size, _opener(archive.open, info), budget))
        yield members


@contextmanager
def tar_members(source: str, data: bytes, limits: UploadLimits) -> Iterator[list[Member]]:
    """The regular files of a tar archive; each header is checked before the next one is read."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"{source}: not a readable tar archive (truncated or corrupt?): {exc}") from None
    budget, members = _Budget(source, limits), []
    with archive:
        for info in _tar_members(source, archive):
            check_member_path(source, info.name)
            if info.issym() or info.islnk():
                raise InvalidInput(f"{source}: {info.name} is a link; only regular files are accepted")
            if info.isdir() or is_litter(info.name):
                continue
            if not info.isfile():
                raise InvalidInput(f"{source}: {info.name} is a special file; only regular files are accepted")
            budget.add_file(info.name, info.size)
            members.append(Member(source, info.name, info.size, _opener(archive.extractfile, info), budget))
        yield members


def _opener(open_member: Callable[..., IO[bytes] | None], info: object) -> Callable[[], IO[bytes] | None]:
    return lambda: open_member(info)


def _tar_members(source: str, archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            info = archive.next()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise InvalidInput(f"{source}: truncated or corrupt tar archive: {exc}") from None
        if info is None:
            _check_end_marker(source, archive)
            return
        yield info


def _check_end_marker(source: str, archive: tarfile.TarFile) -> None:
    """tarfile stops quietly at a missing or garbled header; a complete archive ends with a zero block."""
    try:
        archive.fileobj.seek(archive.offset)
        block = archive.fileobj.read(tarfile.BLOCKSIZE)
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"{source}: truncated or corrupt tar archive: {exc}") from None
    if block != bytes(tarfile.BLOCKSIZE):
        raise InvalidInput(f"{source}: truncated or corrupt tar archive: no end-of-archive marker after the last member")

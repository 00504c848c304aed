"""Reading zip and tar uploads safely, into memory, without extracting anything to disk.

Rejected: members with absolute paths, `..` components or backslashes, links and device files,
more than `max_archive_files` members, more than `max_unpacked_bytes` in total (checked against the
sizes the archive declares AND the bytes actually read, so a lying header cannot get past), and
truncated or corrupt archives. Directories, `__MACOSX/` and dot-files (OS litter) are skipped.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
import zlib
from pathlib import PurePosixPath
from collections.abc import Iterator
from typing import IO, Callable, Optional

from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput, TooLarge

CHUNK_BYTES = 1024 * 1024
Members = list[tuple[str, bytes]]  # (path inside the archive, content), in archive order


class _Budget:
    """Counts members and unpacked bytes against the limits, naming the archive when exceeded."""

    def __init__(self, source: str, limits: UploadLimits) -> None:
        self.source, self.limits = source, limits
        self.files = 0
        self.bytes = 0

    def add_file(self, name: str, declared_size: int) -> None:
        self.files += 1
        if self.files > self.limits.max_archive_files:
            raise TooLarge(
                f"{self.source}: more than {int(self.limits.max_archive_files)} files in the archive",
                detail={"limit_files": self.limits.max_archive_files},
            )
        self._check(name, self.bytes + declared_size)

    def read(self, name: str, stream: IO[bytes]) -> bytes:
        """The member's bytes, read in chunks so a lying header cannot make it read past the budget."""
        chunks = []
        while chunk := stream.read(CHUNK_BYTES):
            self.bytes += len(chunk)
            self._check(name, self.bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check(self, name: str, total: float) -> None:
        if total > self.limits.max_unpacked_bytes:
            raise TooLarge(
                f"{self.source}: unpacks to more than {self.limits.max_unpacked_mb:g} MiB (at {name}); "
                "is it a decompression bomb?",
                detail={"limit_unpacked_mb": self.limits.max_unpacked_mb},
            )


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


def read_zip(source: str, data: bytes, limits: UploadLimits) -> Members:
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
            content = _read_member(source, info.filename, lambda: archive.open(info), budget)
            members.append((info.filename, content))
    return members


def read_tar(source: str, data: bytes, limits: UploadLimits) -> Members:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"{source}: not a readable tar archive (truncated or corrupt?): {exc}") from None
    budget, members = _Budget(source, limits), []
    with archive:
        # Iterate lazily: the next header is read only after this member's sizes were checked.
        for info in _tar_members(source, archive):
            check_member_path(source, info.name)
            if info.issym() or info.islnk():
                raise InvalidInput(f"{source}: {info.name} is a link; only regular files are accepted")
            if info.isdir() or is_litter(info.name):
                continue
            if not info.isfile():
                raise InvalidInput(f"{source}: {info.name} is a special file; only regular files are accepted")
            budget.add_file(info.name, info.size)
            members.append((info.name, _read_member(source, info.name, lambda: archive.extractfile(info), budget)))
    return members


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


def _read_member(source: str, name: str, open_member: Callable[[], Optional[IO[bytes]]], budget: _Budget) -> bytes:
    try:
        stream = open_member()
        if stream is None:
            raise InvalidInput(f"{source}: {name} has no readable content")
        with stream:
            return budget.read(name, stream)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, RuntimeError) as exc:
        # RuntimeError: zipfile's answer to encrypted members.
        raise InvalidInput(f"{source}: cannot read {name} (truncated, corrupt or encrypted?): {exc}") from None

"""Size limits applied to uploads while they are decoded (a light module: no torch import).

The defaults here are also the defaults of the matching settings (`EDGED_MAX_UPLOAD_MB`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_upload_mb: float = 100.0  # the uploaded file as sent
    max_unpacked_mb: float = 1024.0  # bytes decompressed from an archive, in all (decompression bombs)
    max_archive_files: float = 100_000  # members in a zip/tar archive
    decode_memory_mb: float = 512.0  # bytes one upload's decoding holds at once (pixels, arrays, tensors)

    @property
    def max_upload_bytes(self) -> float:
        return self.max_upload_mb * MiB

    @property
    def max_unpacked_bytes(self) -> float:
        return self.max_unpacked_mb * MiB

    @property
    def decode_memory_bytes(self) -> float:
        return self.decode_memory_mb * MiB

    @classmethod
    def trusted(cls) -> "UploadLimits":
        """No limits: for re-decoding bytes that were validated when they were uploaded."""
        inf = float("inf")
        return cls(max_upload_mb=inf, max_unpacked_mb=inf, max_archive_files=inf, decode_memory_mb=inf)

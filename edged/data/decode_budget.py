"""Bounded decoding: a per-upload memory budget, and a process-wide gate on how many decodes run at once.

`DecodeBudget` counts the bytes an upload's decoders actually hold (a member read into memory, decoded
pixels, arrays, the dataset's tensors). Each decoder reserves an allocation's size, computed from headers
(image dimensions, an .npy shape times its item size), *before* allocating, so a small file declaring a
huge payload is refused without the memory ever being touched.

`DecodeGate` lets at most `max_concurrent_decodes` uploads decode at once; a request that waits longer
than `decode_wait_s` gets 503 with Retry-After. When a decode ends, the C allocator's free pages are
handed back to the OS, so the daemon's resident set falls back after a large upload.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from edged.calibrate.memory import release_free_cpu_memory
from edged.data.upload_limits import MiB, UploadLimits
from edged.errors import Busy, TooLarge


class DecodeBudget:
    """Bytes of decoded data one upload holds at once, reserved before each allocation."""

    def __init__(self, source: str, limits: UploadLimits) -> None:
        self.source, self.limit_mb = source, limits.decode_memory_mb
        self.limit_bytes = limits.decode_memory_bytes
        self.held = 0

    def reserve(self, nbytes: int, what: str) -> None:
        """Count `nbytes` about to be allocated for `what`; TooLarge if the budget would be exceeded."""
        if self.held + nbytes > self.limit_bytes:
            raise TooLarge(
                f"{self.source}: decoding needs {(self.held + nbytes) / MiB:.1f} MiB (at {what}), over the "
                f"{self.limit_mb:g} MiB decode memory budget; accepted: uploads whose decoded samples fit in "
                "EDGED_DECODE_MEMORY_MB (fewer or smaller images, or smaller arrays)",
                detail={"limit_decode_mb": self.limit_mb, "needed_mb": round((self.held + nbytes) / MiB, 1)},
            )
        self.held += nbytes

    def release(self, nbytes: int) -> None:
        self.held -= nbytes

    @contextmanager
    def holding(self, nbytes: int, what: str) -> Iterator[None]:
        """Reserve `nbytes` for the duration of the block (a transient allocation)."""
        self.reserve(nbytes, what)
        try:
            yield
        finally:
            self.release(nbytes)


class DecodeGate:
    """A process-wide bound on concurrent decodes; waiting longer than `wait_s` is answered 503."""

    def __init__(self, max_concurrent: int, wait_s: float) -> None:
        self.max_concurrent, self.wait_s = max_concurrent, wait_s
        self._slots = threading.BoundedSemaphore(max_concurrent)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise Busy(
                f"{self.max_concurrent} upload(s) are being decoded and none finished within {self.wait_s:g} s; "
                "retry after the Retry-After delay (EDGED_MAX_CONCURRENT_DECODES bounds decodes at once)",
                detail={"max_concurrent_decodes": self.max_concurrent},
                retry_after_s=math.ceil(self.wait_s),
            )
        try:
            yield
        finally:
            self._slots.release()
            release_free_cpu_memory()  # give the decode's freed pages back (glibc keeps them otherwise)

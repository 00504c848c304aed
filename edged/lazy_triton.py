"""Triton kernels built on first use, or None where Triton is not installed.

CPU-only installs (and Jetson images without Triton) lack it; every caller then takes its torch path. Importing
Triton costs about a second, so it happens on the first call that wants a kernel, never at import time.
"""

from __future__ import annotations

import functools
from typing import Any, Callable


def lazy_triton(build: Callable[[Any, Any], Any]) -> Callable[[], Any]:
    """Decorator: `build(triton, triton.language)` returns the kernels; it runs once, on the first call of the
    decorated name, which then returns them (or None without Triton)."""

    @functools.lru_cache(maxsize=1)
    def kernels() -> Any:
        try:
            import triton
            import triton.language as tl
        except ImportError:
            return None
        return build(triton, tl)

    kernels.__doc__ = build.__doc__
    return kernels

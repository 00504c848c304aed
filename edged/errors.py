"""All of edged's exceptions, in one place.

Core code raises these; the HTTP layer and the CLI translate them once, at the boundary.
Each carries an HTTP status and a stable machine-readable code.
"""

from __future__ import annotations

from typing import Any


class EdgedError(Exception):
    """Base class: a message for people, a code for programs, optional structured detail."""

    status = 500
    code = "internal"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(EdgedError):
    """The caller gave something edged cannot use (bad data, bad setting, bad argument)."""

    status = 422
    code = "invalid_input"


class NotFound(EdgedError):
    status = 404
    code = "not_found"


class Conflict(EdgedError):
    status = 409
    code = "conflict"


class Corrupt(Conflict):
    """Stored bytes no longer match the SHA-256 they were stored under (disk or flash corruption).

    409, not 500: a 500 says edged has a bug and invites a retry, which would get the same bad bytes;
    the stored resource's state is what conflicts with the request, and the client can resolve it
    (upload the dataset again, which rewrites the stored copy, or run the job again). A subclass of
    Conflict, so 409's generic code stays "conflict".
    """

    code = "corrupt"


class TooLarge(EdgedError):
    status = 413
    code = "too_large"


class Unauthorized(EdgedError):
    status = 401
    code = "unauthorized"


class Unavailable(EdgedError):
    """Something edged needs is missing on this machine (a backend, a device, a package)."""

    status = 503
    code = "unavailable"


class Busy(Unavailable):
    """Every slot for this kind of work is taken; the client should retry after `retry_after_s`."""

    code = "busy"

    def __init__(self, message: str, detail: Any = None, retry_after_s: int = 1) -> None:
        super().__init__(message, detail)
        self.retry_after_s = retry_after_s
class InsufficientStorage(EdgedError):
    """The data directory's file system is full (ENOSPC, EDQUOT, SQLite's "database or disk is full")."""

    status = 507
    code = "insufficient_storage"


class Unsupported(EdgedError):
    """A valid request edged does not (yet) handle, e.g. a layer shape a backend rejects."""

    status = 400
    code = "unsupported"


class OutOfBudget(InvalidInput):
    """A memory budget too small for even the smallest unit of work."""

    code = "memory_budget_too_small"


ECHO_LIMIT = 100  # characters of user input a message repeats
DETAIL_LIMIT = 2000  # characters of detail a one-line description keeps


def described(exc: EdgedError) -> str:
    """The message with its detail, where only one line of text travels (a failed job's `error`): a dict's
    entries as `key: a, b`, cut to DETAIL_LIMIT characters."""
    if exc.detail is None or exc.detail == {} or exc.detail == []:
        return exc.message
    if isinstance(exc.detail, dict):
        text = "; ".join(f"{key}: {_joined(value)}" for key, value in exc.detail.items())
    else:
        text = _joined(exc.detail)
    return f"{exc.message} ({text if len(text) <= DETAIL_LIMIT else text[:DETAIL_LIMIT] + '...'})"


def _joined(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def quoted(value: object, limit: int = ECHO_LIMIT) -> str:
    """`value` as a message echoes it: its repr, cut to `limit` characters plus '...' (never a whole upload)."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")

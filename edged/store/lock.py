"""One daemon per data directory: an exclusive flock on DATA_DIR/edged.lock, held for the daemon's life.

A second `edged serve` on the same directory would otherwise migrate the database and "recover" the
first one's running job (SIGKILLing its worker as an orphan). The lock is taken before anything else
touches the directory; the kernel releases it when the process ends, even by kill -9, so a restart
after a crash never finds a stale lock. The holder's pid is written into the file for the message
the next daemon prints (as PostgreSQL's postmaster.pid does); the file itself is never removed, since
unlinking a lock file races with a daemon that has just opened it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edged.errors import Conflict

LOCK_NAME = "edged.lock"


class DataDirLocked(Conflict):
    """Another process holds the data directory's lock."""

    code = "data_dir_locked"


class DataDirLock:
    """The held lock; `release()` (or process exit) lets the next daemon in."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data directory's lock without waiting; DataDirLocked names the holder if it is taken.

    Only the lock file is created (and the directory, if new): a refused daemon writes nothing else.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    # O_CLOEXEC: the worker processes must not inherit the lock, or a worker outliving a killed
    # daemon would keep the next daemon from starting.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise DataDirLocked(
            f"the data directory {data_dir} is in use by another edged daemon (pid {holder}, lock {path}); "
            "stop that daemon first, or give this one its own EDGED_DATA_DIR",
            detail={"data_dir": str(data_dir), "pid": holder},
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(data_dir, fd)

"""Log lines that a hostile client can trigger, at most one per kind per interval, with a count.

A flood of bad connections must not become a flood of log lines (a full disk, a busy journal): the
first occurrence is logged at once, later ones within `interval_s` are counted and reported with the
next line of the same kind.
"""

from __future__ import annotations

import logging
import time

INTERVAL_S = 60.0


class ThrottledLog:
    def __init__(self, logger: logging.Logger, interval_s: float = INTERVAL_S) -> None:
        self.logger, self.interval_s = logger, interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" ({suppressed} more since the last such line, {now - last:.0f} s ago)"  # type: ignore[operator]
        self._last[kind] = now
        self.logger.warning(message)

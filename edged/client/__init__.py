"""The daemon seen from outside: one HTTP client (`EdgedClient`), one Server-Sent Events reader
(`parse_sse`) and a private `edged serve` started on loopback (`LocalDaemon`).

The CLI's `edged submit` and `edged status`, `edged demo`, `edged bench api` and the tests all talk
to a daemon through these.
"""

from edged.client.http import EdgedClient, raise_for_error
from edged.client.local_daemon import LocalDaemon, wait_until_healthy
from edged.client.sse import SseEvent, parse_sse

__all__ = ["EdgedClient", "LocalDaemon", "SseEvent", "parse_sse", "raise_for_error", "wait_until_healthy"]

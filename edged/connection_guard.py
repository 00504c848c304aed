"""HTTP connections that cannot hold the daemon hostage: a cap on open connections and read timeouts.

uvicorn (0.54) bounds a connection's time only between keep-alive requests (`timeout_keep_alive`,
armed after a response). A client that connects and never sends a byte, trickles its request head, or
declares a Content-Length and stops sending, keeps its socket forever; about a thousand of them use up
the file descriptors and the daemon stops accepting anyone. This module adds what nginx calls
`client_header_timeout`, `client_body_timeout` and `worker_connections`, as a subclass of uvicorn's
own HTTP protocol (h11 or httptools, whichever uvicorn picks), so the parsing stays uvicorn's:

- request head: a connection must send a complete request head within `header_timeout_s` of
  connecting (or of its previous response); otherwise it is closed, with a 408 if it sent part of one;
- request body: while the application waits for body bytes, a gap of `body_timeout_s` without any
  ends the request with a 408 and closes the connection (a gap, not a total: a large upload over a
  slow field link is fine as long as bytes keep coming);
- connection cap: with `max_connections` open, a new connection closes the one that has been idle
  longest (no request in progress: it has sent nothing, part of a head, or is between keep-alive
  requests), so idle sockets can never crowd out a client that sends a request. Requests beyond the
  cap, when every connection is busy, get uvicorn's 503 (`limit_concurrency`).

What was closed is logged as one throttled summary line, never a line per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from edged.throttled_log import ThrottledLog

log = ThrottledLog(logging.getLogger("edged.connections"))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float


def _timeout_response(message: str) -> bytes:
    """A complete 408 with edged's error body, written raw: the connection closes right after it."""
    body = json.dumps({"error": {"code": "request_timeout", "message": message, "detail": None}}).encode()
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    return head + body


class GuardMixin:
    """Timers and the idle-eviction cap, observed from the outside of uvicorn's protocol: after each
    `data_received` and response, a new `cycle` means a request head arrived, and `cycle.more_body`
    says whether the application still waits for body bytes. Works on H11Protocol and HttpToolsProtocol."""

    limits: ConnectionLimits  # set by guarded_protocol()
    # From uvicorn's protocol classes:
    connections: set[Any]
    cycle: Any
    transport: asyncio.Transport
    flow: Any
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._seen_cycle: Any = None
        self._received_head_bytes = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self.idle_since = time.monotonic()
        self._arm_header_timer()
        if len(self.connections) > self.limits.max_connections:
            self._evict_longest_idle()

    def data_received(self, data: bytes) -> None:
        self._received_head_bytes = True
        super().data_received(data)  # type: ignore[misc]
        self._observe(data_arrived=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self.idle_since = time.monotonic()
        self._received_head_bytes = False
        if not self.transport.is_closing():
            self._arm_header_timer()
        self._observe(data_arrived=False)  # a pipelined request may have started

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)  # type: ignore[misc]

    @property
    def busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _observe(self, data_arrived: bool) -> None:
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:  # a complete request head arrived
            self._seen_cycle = cycle
            self._cancel(self._header_timer)
            self._header_timer = None
            data_arrived = True
        if self.busy and cycle.more_body:
            if data_arrived or self._body_timer is None:
                self._cancel(self._body_timer)
                self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)
        else:
            self._cancel(self._body_timer)
            self._body_timer = None

    def _arm_header_timer(self) -> None:
        self._cancel(self._header_timer)
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.busy or self.transport.is_closing():
            return
        if self._received_head_bytes:
            self.transport.write(_timeout_response(
                f"the request head did not arrive within {self.limits.header_timeout_s:g} s; send the whole "
                "request line and headers at once (EDGED_HEADER_TIMEOUT_S sets the limit)"))
        log.report("header_timeout", "closed connections that sent no complete request head within "
                    f"{self.limits.header_timeout_s:g} s (EDGED_HEADER_TIMEOUT_S)")
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if not self.busy or not cycle.more_body or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the application is slow to read, not the client to send: wait on
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)
            return
        if not cycle.response_started:
            self.transport.write(_timeout_response(
                f"the request body stalled: no bytes for {self.limits.body_timeout_s:g} s before the declared "
                "Content-Length was reached; send the whole body, and a Content-Length that matches it "
                "(EDGED_BODY_TIMEOUT_S sets the limit)"))
        # The application sees the client go away (http.disconnect) and nothing it sends is written.
        cycle.disconnected = True
        cycle.message_event.set()
        log.report("body_timeout", f"ended requests whose body stalled for {self.limits.body_timeout_s:g} s "
                    "(EDGED_BODY_TIMEOUT_S)")
        self.transport.close()

    def _evict_longest_idle(self) -> None:
        idle = [c for c in self.connections if c is not self and isinstance(c, GuardMixin) and not c.busy
                and not c.transport.is_closing()]
        if not idle:
            return  # every other connection has a request in progress: this one's request gets a 503
        oldest = min(idle, key=lambda c: c.idle_since)
        log.report("evicted", f"{self.limits.max_connections} connections open (EDGED_MAX_CONNECTIONS): "
                    "closed the longest-idle ones to admit new clients")
        oldest.transport.close()  # its socket closes at the next turn of the loop
        oldest.connections.discard(oldest)  # uncounted now, so the next new connection sees the true count

    def _cancel_timers(self) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        self._header_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def guarded_protocol(base: type[asyncio.Protocol], limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class `base` with the guard and `limits` (pass it as Config(http=...))."""
    return type(f"Guarded{base.__name__}", (GuardMixin, base), {"limits": limits})

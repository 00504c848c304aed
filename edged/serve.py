"""`edged serve`: uvicorn configured for a daemon that faces the network alone.

- File descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at start-up (systemd's
  `LimitNOFILE=` sets the hard one), and the connection cap is kept below what is left of it.
- Connections: a cap and header/body read timeouts (`edged.connection_guard`), uvicorn's
  `limit_concurrency` (503 beyond the cap) and `timeout_keep_alive`.
- Accept errors (EMFILE and the like) are logged at most once a minute, with a count: asyncio logs
  every failed accept() with a traceback, up to `backlog` times per loop turn.
- TLS through uvicorn's certificate settings; a non-loopback address without TLS is refused unless
  EDGED_ALLOW_PLAINTEXT=true says plain HTTP on the network is intended.
- Shutdown: SSE streams are told the daemon is stopping before uvicorn waits for open connections,
  so they end at once with a final event instead of holding the shutdown for its whole timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import socket
import threading
from typing import Any

import uvicorn

from edged.connection_guard import ConnectionLimits, guarded_protocol
from edged.errors import InvalidInput
from edged.settings import Settings
from edged.throttled_log import ThrottledLog

log = logging.getLogger("edged.serve")

# Descriptors kept for everything but client sockets: SQLite and its WAL per request thread, blobs being
# written, the worker's pipes and log, the listening sockets, imported libraries.
RESERVED_FDS = 128
# uvicorn passes `backlog` to listen() and asyncio also accepts up to `backlog` connections in one loop
# turn, before any of them can be counted and capped: keep that burst small next to the cap.
ACCEPT_BACKLOG = 128
ACCEPT_ERROR = "socket.accept() out of system resource"


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_limits(settings: Settings, nofile: int) -> ConnectionLimits:
    """The guard's limits, with the cap lowered (and said so) where the open-file limit is smaller."""
    room = nofile - RESERVED_FDS - ACCEPT_BACKLOG
    if room < 16:
        raise InvalidInput(f"the open-file limit is {nofile}: too low to serve; raise it to at least "
                           f"{RESERVED_FDS + ACCEPT_BACKLOG + 16} (LimitNOFILE= in the unit, ulimit -n)")
    max_connections = min(settings.max_connections, room)
    if max_connections < settings.max_connections:
        log.warning("EDGED_MAX_CONNECTIONS=%d lowered to %d: the open-file limit is %d (raise LimitNOFILE= "
                    "to allow more)", settings.max_connections, max_connections, nofile)
    return ConnectionLimits(max_connections, settings.header_timeout_s, settings.body_timeout_s)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def tls_files(settings: Settings) -> tuple[str | None, str | None]:
    """(certfile, keyfile) or (None, None); InvalidInput for half a pair, a missing file, or plain
    HTTP on a non-loopback address that EDGED_ALLOW_PLAINTEXT does not allow."""
    cert, key = settings.tls_certfile, settings.tls_keyfile
    if (cert is None) != (key is None):
        missing = "EDGED_TLS_KEYFILE" if key is None else "EDGED_TLS_CERTFILE"
        raise InvalidInput(f"{missing} is not set: TLS needs both EDGED_TLS_CERTFILE (the PEM certificate) and "
                           "EDGED_TLS_KEYFILE (its PEM private key), or neither for plain HTTP on loopback")
    for name, path in (("EDGED_TLS_CERTFILE", cert), ("EDGED_TLS_KEYFILE", key)):
        if path is not None and not path.is_file():
            raise InvalidInput(f"{name}={path} is not a readable file; give the path of a PEM file")
    if cert is None and not settings.allow_plaintext and not is_loopback(settings.host):
        raise InvalidInput(
            f"EDGED_HOST={settings.host} is reachable from the network, and plain HTTP would send the bearer "
            "token in clear: set EDGED_TLS_CERTFILE and EDGED_TLS_KEYFILE (README: TLS for field deployments), "
            "listen on 127.0.0.1, or set EDGED_ALLOW_PLAINTEXT=true if a TLS proxy or an isolated network "
            "protects the traffic")
    return (str(cert), str(key)) if cert is not None and key is not None else (None, None)


class EdgedServer(uvicorn.Server):
    """uvicorn's server, plus a throttled log of accept errors and an early 'stopping' signal."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping
        self._accept_log = ThrottledLog(logging.getLogger("edged.connections"))

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self._loop_exception)
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.stopping.set()  # SSE streams end now, with a final event; then uvicorn waits for connections
        await super().shutdown(sockets)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_ERROR:
            self._accept_log.report("accept", f"cannot accept connections: {context.get('exception')}; "
                                     "new clients wait (raise LimitNOFILE= or lower EDGED_MAX_CONNECTIONS)")
            return
        loop.default_exception_handler(context)


def serve(settings: Settings) -> None:
    """Run the daemon until SIGTERM/SIGINT (the app is imported here, after the checks: it pulls in torch)."""
    certfile, keyfile = tls_files(settings)
    from edged.api.app import create_app

    limits = connection_limits(settings, raise_nofile_limit())
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
        # uvicorn answers 503 once `connections >= limit_concurrency`, counting the one asking: + 1
        # lets the guard's cap (which evicts idle connections first) be the limit.
        limit_concurrency=limits.max_connections + 1,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        backlog=ACCEPT_BACKLOG,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    config.load()  # resolves uvicorn's HTTP protocol class (httptools if installed, else h11)
    config.http_protocol_class = guarded_protocol(config.http_protocol_class, limits)
    log.info("serving on %s://%s:%d, at most %d connections", "https" if certfile else "http", settings.host,
             settings.port, limits.max_connections)
    EdgedServer(config, app.state.stopping).run()

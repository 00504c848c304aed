"""A throw-away `edged serve` on loopback (a free port, a fresh token, its own log file) for `edged demo`
and `edged bench api`, and the wait for a starting daemon to answer, which the tests' daemon shares."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Optional, Union

import httpx

from edged.errors import Unavailable

START_TIMEOUT_S = 90.0  # the first start imports torch and migrates the database: slow on a small board
LOG_TAIL_CHARS = 2000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float,
                       verify: Union[ssl.SSLContext, bool] = True) -> None:
    """Poll GET `url`/healthz until it answers 200; raises Unavailable if `process` exits first or
    `timeout_s` passes. `verify` is httpx's: the SSL context trusting a daemon that serves TLS."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"edged serve exited with status {process.returncode} while starting")
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise Unavailable(f"edged serve did not answer {url}/healthz within {timeout_s:.0f} s")


class LocalDaemon:
    """`edged serve` as a child process; a context manager that waits for /healthz and stops it on exit.

    The token is generated for this run only, so nothing else can use the daemon while the demo runs.
    """

    def __init__(self, data_dir: Path, shutdown_timeout_s: float = 10.0,
                 settings: Optional[dict[str, str]] = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_urlsafe(24)
        self.log_path = data_dir / "demo-daemon.log"
        self.shutdown_timeout_s = shutdown_timeout_s
        self.settings = settings or {}  # more EDGED_* variables for the daemon (a benchmark's worker settings)
        self._process: Optional[subprocess.Popen] = None
        self._log: Optional[IO[bytes]] = None

    def __enter__(self) -> "LocalDaemon":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "EDGED_TOKEN": self.token, "EDGED_DATA_DIR": str(self.data_dir),
               "EDGED_SHUTDOWN_TIMEOUT_S": str(self.shutdown_timeout_s), **self.settings}
        env.pop("EDGED_ENV_FILE", None)  # the demo's settings are the ones above, not a deployment's
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "edged.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C in the terminal reaches only the demo, which cancels its job and
            # then stops the daemon itself.
            start_new_session=True,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self._process is not None
        try:
            wait_until_healthy(self.url, self._process, START_TIMEOUT_S)
        except Unavailable as exc:
            raise Unavailable(f"{exc.message}; its log ({self.log_path}) ends with:\n{self.log_tail()}") from None

    def stop(self) -> Optional[int]:
        """SIGTERM (graceful: the running job is stopped between steps), SIGKILL if it overstays."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.shutdown_timeout_s + 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if process is None else process.returncode

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-LOG_TAIL_CHARS:]

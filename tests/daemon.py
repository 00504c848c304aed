"""The suite's one `edged serve` harness: a real daemon process on loopback, configured through an env
file as an operator would, read through edged.client (its HTTP client and SSE reader).

The `daemon` fixture (tests/conftest.py) is a started `Daemon` on tmp_path; tests that need other
settings, an open-file limit, TLS or restarts build their own `Daemon`.
"""

from __future__ import annotations

import os
import resource
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx

from edged.client import EdgedClient, SseEvent, wait_until_healthy
from edged.client.local_daemon import free_port
from edged.errors import Unavailable
from edged.store.db import open_db
from suite_settings import TEST_FACTORIES, TEST_TOKEN

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
START_TIMEOUT_S = 60.0
# TEST_FACTORIES' module lives here; the daemon validates jobs against it and its workers build it.
TEST_MODEL_DIR = Path(__file__).parent / "jobs"


class Daemon:
    """`edged serve` on loopback. `settings` are extra EDGED_* lines for its env file (with
    EDGED_TLS_CERTFILE it serves https, and clients verify against that certificate); `nofile` runs it
    with that open-file limit, soft and hard, as a small board or a default unit would."""

    def __init__(self, tmp_path: Path, settings: dict[str, str] | None = None, nofile: int | None = None) -> None:
        self.port = free_port()
        settings = settings or {}
        certificate = settings.get("EDGED_TLS_CERTFILE")
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=certificate) if certificate else True
        self.url = f"{'https' if certificate else 'http'}://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.env_file = tmp_path / "edged.env"
        lines = {"EDGED_TOKEN": TEST_TOKEN, "EDGED_DATA_DIR": str(self.data_dir), "EDGED_SHUTDOWN_TIMEOUT_S": "5",
                 "EDGED_MODEL_FACTORIES": TEST_FACTORIES, **settings}
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
        self.nofile = nofile
        self.log_path = tmp_path / "serve.log"
        self._log_offset = 0
        self.process: subprocess.Popen | None = None

    def _limit_nofile(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def command(self, environment: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
        """The `edged serve` command line and environment of this daemon; `environment` adds variables
        (e.g. EDGED_TOKEN, as systemd sets). Its workers find the test model on PYTHONPATH and use one
        torch thread (two OpenMP threads spin against each other on a shared 2-core box)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
        python_path = os.pathsep.join(filter(None, [str(TEST_MODEL_DIR), env.get("PYTHONPATH")]))
        env |= {"PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"} | (environment or {})
        return [sys.executable, "-m", "edged.cli", "--env-file", str(self.env_file), "serve", "--port", str(self.port)], env

    def start(self, environment: dict[str, str] | None = None) -> None:
        """Start it and wait for /healthz, its output going to `log_path` (a pipe nobody reads would fill
        up with the access log and block the daemon's next log write: a frozen daemon, not a slow one)."""
        command, env = self.command(environment)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=self._limit_nofile if self.nofile else None)
        try:
            wait_until_healthy(self.url, self.process, START_TIMEOUT_S, verify=self.verify)
        except Unavailable as exc:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"{exc.message}; it printed:\n{self.output()}") from None

    def output(self) -> str:
        """What this run of the daemon printed so far."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> str:
        """Send `sig` (if it still runs), wait up to `timeout_s` for the exit, and return what this run printed."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=timeout_s)
        return self.output()

    def worker_pid(self, job_id: str) -> int | None:
        """The job's worker process id as the manager recorded it (None before a worker started)."""
        db = open_db(self.data_dir / "edged.db")
        try:
            return db.execute("SELECT worker_pid FROM jobs WHERE id = ?", [job_id]).fetchone()[0]
        finally:
            db.close()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=AUTH, timeout=30, verify=self.verify)  # a loaded 2-core box

    def job(self, job_id: str) -> Callable[[], dict[str, Any]]:
        return lambda: self.get(f"/v1/jobs/{job_id}").json()

    def client(self) -> EdgedClient:
        """edged's own HTTP client on this daemon (http only: it trusts the system's certificates)."""
        return EdgedClient(self.url, TEST_TOKEN)

    def events(self, job_id: str, after: int | None = None) -> list[SseEvent]:
        """The job's events (after event id `after`, via Last-Event-ID) up to and including the stream's `end`."""
        with self.client() as client:
            return list(client.events(job_id, after))

    def next_event(self, job_id: str, kind: str, after: int = 0) -> dict[str, Any]:
        """The first `kind` event after event id `after` (the stream resumes there via Last-Event-ID)."""
        with self.client() as client:
            for event_kind, data in client.events(job_id, after):
                if event_kind == kind:
                    return data
        raise AssertionError(f"the stream ended without a {kind} event")

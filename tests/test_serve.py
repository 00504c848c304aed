"""`edged serve`: a real uvicorn process on loopback, stopped with SIGTERM, shutting down in bounds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

TOKEN = "serve-test-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            return httpx.get(f"{url}/healthz", timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("edged serve did not answer /healthz in time")


def test_serve_answers_and_stops_gracefully(tmp_path):
    port = _free_port()
    env_file = tmp_path / "edged.env"
    env_file.write_text(f"EDGED_TOKEN={TOKEN}\nEDGED_DATA_DIR={tmp_path / 'data'}\nEDGED_SHUTDOWN_TIMEOUT_S=3\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "edged.cli", "--env-file", str(env_file), "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait_healthy(url, process).json()["status"] == "ok"
        upload = httpx.post(
            f"{url}/v1/datasets",
            headers={"Authorization": f"Bearer {TOKEN}"},
            files={"file": ("d.csv", b"f,label\n1,a\n2,b\n")},
        )
        assert upload.status_code == 201
        assert (tmp_path / "data" / "edged.db").is_file()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    # uvicorn re-raises the signal after its graceful shutdown, so the status is -SIGTERM (clean for systemd).
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output


def test_serve_without_token_exits_with_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env["EDGED_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "edged.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "EDGED_TOKEN is not set" in result.stderr


def test_serve_raises_the_soft_open_file_limit_to_the_hard_one():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 2048:
        pytest.skip(f"hard open-file limit {hard}: nothing to raise to")
    code = "from edged.serve import raise_nofile_limit; import resource; raise_nofile_limit(); " \
           "print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    assert result.stdout.split() == [str(hard), str(hard)]


def test_tls_settings_must_come_as_a_pair_and_network_needs_tls(tmp_path):
    from edged.errors import InvalidInput
    from edged.serve import tls_files
    from edged.settings import get_settings

    cert = tmp_path / "cert.pem"
    cert.write_text("not checked here")
    with pytest.raises(InvalidInput, match="EDGED_TLS_KEYFILE is not set"):
        tls_files(get_settings(tls_certfile=cert))
    with pytest.raises(InvalidInput, match="EDGED_ALLOW_PLAINTEXT=true"):
        tls_files(get_settings(host="0.0.0.0"))
    assert tls_files(get_settings(host="0.0.0.0", allow_plaintext=True)) == (None, None)
    assert tls_files(get_settings(host="::1")) == (None, None)
    assert tls_files(get_settings(host="0.0.0.0", tls_certfile=cert, tls_keyfile=cert)) == (str(cert), str(cert))


def test_accept_errors_are_logged_once_a_minute_with_a_count(caplog):
    import asyncio
    import threading

    import uvicorn

    from edged.serve import ACCEPT_ERROR, EdgedServer

    server = EdgedServer(uvicorn.Config(app=None), threading.Event())  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level("WARNING", logger="edged.connections"):
            for _ in range(2048):  # what asyncio reports in one loop turn when accept() hits EMFILE
                server._loop_exception(loop, {"message": ACCEPT_ERROR, "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "edged.connections"]
    assert len(lines) == 1 and "Too many open files" in lines[0] and "LimitNOFILE" in lines[0]

"""`edged serve`: a real uvicorn process on loopback, stopped with SIGTERM, shutting down in bounds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from daemon import AUTH, Daemon


def test_serve_answers_and_stops_gracefully(tmp_path):
    daemon = Daemon(tmp_path, {"EDGED_SHUTDOWN_TIMEOUT_S": "3"})
    daemon.start()
    try:
        assert daemon.get("/healthz").json()["status"] == "ok"
        upload = httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, files={"file": ("d.csv", b"f,label\n1,a\n2,b\n")})
        assert upload.status_code == 201
        assert (tmp_path / "data" / "edged.db").is_file()
    finally:
        output = daemon.stop(signal.SIGTERM, timeout_s=10)
    # uvicorn re-raises the signal after its graceful shutdown, so the status is -SIGTERM (clean for systemd).
    assert daemon.process is not None and daemon.process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in output


def test_serve_without_token_exits_with_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env["EDGED_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "edged.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "EDGED_TOKEN is not set" in result.stderr


@pytest.mark.parametrize("port", ["0", "99999", "http"])
def test_serve_refuses_a_bad_port_by_the_flags_name_before_it_reads_any_setting(port, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}  # no token either: the flag fails first
    result = subprocess.run([sys.executable, "-m", "edged.cli", "serve", "--port", port], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert f"argument --port: '{port}' is not an integer >= 1 and <= 65535" in result.stderr, result.stderr


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

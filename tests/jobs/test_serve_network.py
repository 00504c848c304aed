"""`edged serve` facing a hostile or careless network: idle and stalled connections, TLS, and a
shutdown with SSE followers. Every test drives a real daemon process."""

from __future__ import annotations

import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from daemon import AUTH, Daemon
from jobs_helpers import FAST_JOB, upload
from suite_settings import TEST_TOKEN

IDLE_SOCKETS = 1100


def _raise_own_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"this test opens {needed} sockets; the hard open-file limit is {hard}")
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _raw_request(port: int, data: bytes, wait_s: float) -> tuple[bytes, float]:
    """What the daemon answers to `data` sent raw, and after how many seconds it closed the connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait_s)
        s.sendall(data)
        started, received = time.monotonic(), b""
        while chunk := s.recv(65536):
            received += chunk
        return received, time.monotonic() - started


def test_1100_idle_connections_leave_healthz_answering(tmp_path):
    # The original failure: with 1,024 descriptors, ~1,000 sockets that never send a byte stopped every
    # accept() and asyncio logged `Too many open files` tens of MB a second. A long header timeout here,
    # so that what keeps the daemon reachable is the connection cap, not the timeout.
    _raise_own_nofile(IDLE_SOCKETS + 200)
    daemon = Daemon(tmp_path, {"EDGED_HEADER_TIMEOUT_S": "120"}, nofile=1024)
    daemon.start()
    idle = []
    try:
        for _ in range(IDLE_SOCKETS):
            idle.append(socket.create_connection(("127.0.0.1", daemon.port), timeout=10))
        time.sleep(1.0)  # the daemon accepts them all
        timings = []
        for _ in range(3):
            started = time.monotonic()
            response = httpx.get(f"{daemon.url}/healthz", timeout=5)
            timings.append(time.monotonic() - started)
            assert response.status_code == 200
    finally:
        for s in idle:
            s.close()
        output = daemon.stop(signal.SIGTERM)
    assert max(timings) < 1.0, timings  # measured ~0.01 s on the loaded 2-core build machine
    assert output.count("Too many open files") <= 1 and len(output) < 20_000, output[-3000:]
    assert "closed the longest-idle ones" in output  # said once, not once per connection
    assert output.count("longest-idle") == 1


def test_silent_trickling_and_stalled_connections_are_closed_in_time(tmp_path):
    daemon = Daemon(tmp_path, {"EDGED_HEADER_TIMEOUT_S": "1", "EDGED_BODY_TIMEOUT_S": "2"})
    daemon.start()
    try:
        # A connection that never sends a byte is closed without a response.
        answer, seconds = _raw_request(daemon.port, b"", wait_s=15)
        assert answer == b"" and 0.9 < seconds < 6, seconds
        # Part of a request head, then nothing: 408.
        answer, seconds = _raw_request(daemon.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait_s=15)
        assert answer.startswith(b"HTTP/1.1 408") and 0.9 < seconds < 6, (answer, seconds)
        # A Content-Length larger than the body: 408 with edged's error body, within the body timeout.
        head = (f"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000\r\n\r\n").encode()
        answer, seconds = _raw_request(daemon.port, head + b"--b\r\nContent-Disposition: form-data", wait_s=15)
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
        assert 1.9 < seconds < 7, seconds
        assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200
    finally:
        output = daemon.stop(signal.SIGTERM)
    assert "Exception in ASGI application" not in output, output[-3000:]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_serves_https_with_a_self_signed_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    daemon = Daemon(tmp_path, {"EDGED_TLS_CERTFILE": str(cert), "EDGED_TLS_KEYFILE": str(key)})
    daemon.start()
    try:
        assert daemon.url.startswith("https://")
        assert httpx.get(f"{daemon.url}/healthz", verify=str(cert), timeout=10).json()["status"] == "ok"
        assert daemon.get("/v1/jobs").status_code == 200
        with pytest.raises(httpx.TransportError):  # plain HTTP gets no answer from a TLS port
            httpx.get(f"http://127.0.0.1:{daemon.port}/healthz", timeout=5)
    finally:
        daemon.stop(signal.SIGTERM)


def test_network_address_without_tls_is_refused(tmp_path):
    daemon = Daemon(tmp_path)
    result = subprocess.run([sys.executable, "-m", "edged.cli", "--env-file", str(daemon.env_file), "serve",
                             "--host", "0.0.0.0", "--port", str(daemon.port)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "EDGED_TLS_CERTFILE" in result.stderr and "EDGED_ALLOW_PLAINTEXT=true" in result.stderr


def test_sigterm_ends_sse_followers_with_an_end_event_at_once(tmp_path):
    daemon = Daemon(tmp_path, {"EDGED_SHUTDOWN_TIMEOUT_S": "20"})
    daemon.start()
    events: list[tuple[str, dict]] = []
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            dataset = upload(client, AUTH, count=300)
            job = client.post("/v1/jobs", headers=AUTH, json={**FAST_JOB, "dataset": dataset, "epochs": 200}).json()
        follower = daemon.client()

        def follow() -> None:
            for kind, data in follower.events(job["id"]):
                events.append((kind, data))

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not any(kind == "step" for kind, _ in events) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(kind == "step" for kind, _ in events), events
        started = time.monotonic()
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        daemon.process.wait(timeout=60)
        stop_s = time.monotonic() - started
        thread.join(timeout=10)
        follower.close()
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
    kind, end = events[-1]
    assert kind == "end" and end["daemon_stopping"] is True and end["state"] == "running", events[-3:]
    assert "reconnect with Last-Event-ID" in end["reason"]
    # Before: uvicorn waited the whole shutdown timeout (here 20 s) for the open stream.
    assert stop_s < 10, stop_s

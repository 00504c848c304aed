"""systemd/edged.service: the settings the issue asks for, the stop timeout longer than the graceful
shutdown, and `systemd-analyze verify` where systemd is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from edged.settings import Settings, get_settings

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edged.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; systemd keys may repeat (DeviceAllow=, Environment=)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        assert section is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        sections[section][key.strip()].append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    assert len(service[key]) == 1, f"{key} set {len(service[key])} times"
    return service[key][0]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_runs_as_its_own_user_in_its_state_directory(service):
    assert one(service, "User") == "edged" and one(service, "Group") == "edged"
    assert one(service, "StateDirectory") == "edged"
    environment = dict(item.split("=", 1) for item in service["Environment"])
    assert environment["EDGED_DATA_DIR"] == "/var/lib/edged"
    assert one(service, "EnvironmentFile") == "/etc/edged/edged.env"
    # The data dir the unit sets is one edged accepts.
    assert get_settings(data_dir=environment["EDGED_DATA_DIR"]).data_dir == Path("/var/lib/edged")


def test_starts_the_venv_daemon_and_restarts_on_failure(service):
    assert one(service, "ExecStart").split() == ["/opt/edged/venv/bin/edged", "serve"]
    assert one(service, "Restart") == "on-failure"


def test_hardening(service):
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "DevicePolicy": "closed"}.items():
        assert one(service, key) == value, key
    assert service["ReadWritePaths"] == ["/var/lib/edged"]  # the data directory and nothing else


def test_gpu_device_nodes_and_groups(service):
    allowed = {entry.split()[0]: entry.split()[1] for entry in service["DeviceAllow"]}
    for device in ("char-nvhost*", "/dev/nvmap", "char-nvidia*", "char-drm"):
        assert allowed.get(device) == "rw", device
    assert set(one(service, "SupplementaryGroups").split()) == {"video", "render"}


def test_stop_timeout_exceeds_graceful_shutdown(service):
    environment = dict(item.split("=", 1) for item in service["Environment"])
    shutdown_s = float(environment.get("EDGED_SHUTDOWN_TIMEOUT_S", Settings.model_fields["shutdown_timeout_s"].default))
    # The daemon's graceful shutdown (open requests and the running job) must end before SIGKILL.
    assert seconds(one(service, "TimeoutStopSec")) >= 2 * shutdown_s


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    # verify insists the ExecStart binary exists: point it at this checkout's edged, nothing else changes.
    edged = Path(sys.executable).with_name("edged")
    if not edged.is_file():
        pytest.skip(f"no edged entry point next to {sys.executable}")
    unit = tmp_path / "edged.service"
    unit.write_text(UNIT.read_text().replace("/opt/edged/venv/bin/edged", str(edged)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if "edged.service" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_open_file_limit_leaves_room_for_the_connection_cap(service):
    from edged.serve import ACCEPT_BACKLOG, RESERVED_FDS

    # edged raises its soft limit to this hard one and keeps the connection cap below it.
    nofile = int(one(service, "LimitNOFILE"))
    assert nofile >= Settings.model_fields["max_connections"].default + RESERVED_FDS + ACCEPT_BACKLOG

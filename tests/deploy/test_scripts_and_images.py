"""deploy/*.sh parse (bash -n) and are shellcheck-clean where shellcheck is installed; the
Dockerfiles (no Docker engine here) copy files that exist, keep torch as the issue asks and serve
as a non-root user with a data volume."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "deploy" / "setup.sh", ROOT / "deploy" / "install-jetson.sh"]
DOCKERFILES = [ROOT / "docker" / "Dockerfile.x86", ROOT / "docker" / "Dockerfile.jetson"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_shellcheck_clean(script):
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_setup_usage_error_without_a_command():
    result = subprocess.run(["bash", str(SCRIPTS[0])], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "setup.sh demo" in result.stderr


def test_setup_installs_torch_before_edged_on_x86():
    text = SCRIPTS[0].read_text()
    assert text.index('"torch==$TORCH_VERSION"') < text.index('-e "${REPO}[${extras}]"')
    assert 'TORCH_VERSION="2.13.0"' in text and "--system-site-packages" in text


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_existing_files_and_serves_as_non_root(dockerfile):
    steps = instructions(dockerfile)
    for name, args in steps:
        if name == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
    users = [args for name, args in steps if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("VOLUME", '["/var/lib/edged"]') in steps
    assert ("CMD", '["serve"]') in steps and ("ENTRYPOINT", '["edged"]') in steps
    assert "UNTESTED" in dockerfile.read_text()


def test_x86_image_installs_cpu_torch_first():
    runs = [args for name, args in instructions(DOCKERFILES[0]) if name == "RUN"]
    torch_step = next(i for i, args in enumerate(runs) if "torch==2.13.0" in args)
    edged_step = next(i for i, args in enumerate(runs) if "pip install ." in args)
    assert torch_step < edged_step and "download.pytorch.org/whl/cpu" in runs[torch_step]
    assert instructions(DOCKERFILES[0])[0] == ("FROM", "python:3.11-slim")


def test_jetson_image_keeps_the_base_torch():
    steps = instructions(DOCKERFILES[1])
    assert not any("torch==" in args and "--index-url" in args for _, args in steps)
    assert any(name == "RUN" and "--constraint" in args for name, args in steps)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_do_not_bind_the_network_over_plain_http(dockerfile):
    # edged's default host is loopback; a network address needs TLS (or EDGED_ALLOW_PLAINTEXT=true).
    environment = " ".join(args for name, args in instructions(dockerfile) if name == "ENV")
    assert "EDGED_HOST" not in environment and "EDGED_ALLOW_PLAINTEXT" not in environment
    healthcheck = next(args for name, args in instructions(dockerfile) if name == "HEALTHCHECK")
    assert "EDGED_TLS_CERTFILE" in healthcheck and "https" in healthcheck
    assert "EDGED_TLS_CERTFILE=" in dockerfile.read_text()  # the run line shows HTTPS on the network


def _env_file_lines(tmp_path, tls: bool) -> list[str]:
    """What the installer's listen_settings() writes to the env file, run on its own."""
    script = SCRIPTS[1].read_text().replace('main "$@"', "listen_settings")
    env = {"PATH": "/usr/bin:/bin", "TLS_CERT": str(tmp_path / "c.pem") if tls else "", "TLS_KEY": ""}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env, check=True)
    return [line for line in result.stdout.splitlines() if not line.startswith("#")]


def test_installer_listens_on_loopback_unless_given_tls(tmp_path):
    assert _env_file_lines(tmp_path, tls=False) == ["EDGED_HOST=127.0.0.1"]
    assert _env_file_lines(tmp_path, tls=True) == [
        "EDGED_HOST=0.0.0.0", "EDGED_TLS_CERTFILE=/etc/edged/tls/cert.pem", "EDGED_TLS_KEYFILE=/etc/edged/tls/key.pem"]
    text = SCRIPTS[1].read_text()
    assert "EDGED_HOST=0.0.0.0" not in text.split("listen_settings()")[0]  # nothing else binds the network

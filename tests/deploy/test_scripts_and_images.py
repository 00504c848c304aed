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

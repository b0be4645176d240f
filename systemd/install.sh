#!/bin/sh
# Install nspvend as a systemd service.  Run again to upgrade: it is idempotent, and it never
# overwrites an existing /etc/nspvend/config.toml.
#
#   sudo systemd/install.sh              install into / and enable the service
#   systemd/install.sh --root DIR        install into a throwaway root (tests, images)
#
# Puts: the package in a virtualenv under /opt/nspvend/venv, the unit in
# /etc/systemd/system, an example config in /etc/nspvend/config.toml (only if none),
# a system user "nspvend" in the gpio and dialout groups, and a group "nspvend-staff" whose
# members may use the staff commands (the control socket); state lives in /var/lib/nspvend,
# readable by the service alone.
set -eu

ROOT=/
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(cd "$ROOT" && pwd)
P=${ROOT%/}
say() { echo "install.sh: $*"; }

# 1. the user and its groups (in a throwaway root: only if it has an /etc/passwd)
if [ "$ROOT" = / ] || [ -f "$P/etc/passwd" ]; then
    prefix=""; [ "$ROOT" = / ] || prefix="--prefix $P"
    for group in gpio dialout nspvend-staff; do
        grep -q "^$group:" "$P/etc/group" || groupadd $prefix --system "$group"
    done
    # the service is in nspvend-staff only so that it may give the control socket to it
    if grep -q "^nspvend:" "$P/etc/passwd"; then
        usermod $prefix -a -G gpio,dialout,nspvend-staff nspvend
    else
        useradd $prefix --system --user-group --groups gpio,dialout,nspvend-staff --no-create-home \
            --home-dir /var/lib/nspvend --shell /usr/sbin/nologin \
            --comment "nspvend vending controller" nspvend
        say "created the system user nspvend"
    fi
    say "staff who may run nspvend status/refill/...: usermod -aG nspvend-staff NAME"
else
    say "no $P/etc/passwd: not creating the user"
fi

# 2. the package, in its own virtualenv, from the lock: exact versions, every file's hash
#    checked, nothing from the system's site-packages (lgpio comes from PyPI's aarch64 wheel)
mkdir -p "$P/opt/nspvend"
if [ -x "$P/opt/nspvend/venv/bin/python" ] && \
        grep -q "include-system-site-packages = true" "$P/opt/nspvend/venv/pyvenv.cfg"; then
    rm -rf "$P/opt/nspvend/venv"  # made by an older installer: start clean
fi
if [ ! -x "$P/opt/nspvend/venv/bin/python" ]; then
    python3 -m venv "$P/opt/nspvend/venv"
fi
pip() { "$P/opt/nspvend/venv/bin/python" -m pip --quiet --disable-pip-version-check "$@"; }
pip install --require-hashes ${NSPVEND_PIP_OPTIONS:-} -r "$SRC/requirements/pi.lock"
# built from a copy: setuptools writes build/ and *.egg-info where it builds
build=$(mktemp -d)
cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/controller" "$SRC/hal" "$SRC/simulator" \
    "$SRC/firmware_py" "$SRC/hub" "$build/"
pip install --no-deps --no-build-isolation ${NSPVEND_PIP_OPTIONS:-} "$build"
rm -rf "$build"
cp "$SRC/README.md" "$P/opt/nspvend/README.md"
say "installed $("$P/opt/nspvend/venv/bin/nspvend" --version 2>/dev/null || echo nspvend) in /opt/nspvend/venv"

# 3. the config: never overwrite one that is there
install -d -m 0750 "$P/etc/nspvend"
if [ -e "$P/etc/nspvend/config.toml" ]; then
    say "kept the existing /etc/nspvend/config.toml"
else
    install -m 0640 "$SRC/systemd/config.example.toml" "$P/etc/nspvend/config.toml"
    say "wrote an example /etc/nspvend/config.toml: edit it, then: nspvend check-config /etc/nspvend/config.toml"
fi
if [ "$ROOT" = / ]; then
    # readable by the service, not by staff: the config names the broker password and key files
    chgrp nspvend /etc/nspvend /etc/nspvend/config.toml
    for secret in /etc/nspvend/mqtt-password /etc/nspvend/command.key; do
        [ -e "$secret" ] && chgrp nspvend "$secret" && chmod 0640 "$secret"
    done
fi

# 4. the unit, enabled
install -d "$P/etc/systemd/system"
install -m 0644 "$SRC/systemd/nspvend.service" "$P/etc/systemd/system/nspvend.service"
if [ "$ROOT" = / ]; then
    systemctl daemon-reload
    systemctl enable nspvend.service
    say "enabled nspvend.service; start it with: systemctl start nspvend"
else
    systemctl --root="$P" enable nspvend.service >/dev/null 2>&1 || {
        install -d "$P/etc/systemd/system/multi-user.target.wants"
        ln -sf /etc/systemd/system/nspvend.service \
            "$P/etc/systemd/system/multi-user.target.wants/nspvend.service"
    }
    say "enabled nspvend.service in $P"
fi

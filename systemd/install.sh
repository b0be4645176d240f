#!/bin/sh
# Install nspvend as a systemd service.  Run again to upgrade: it is idempotent, and it never
# overwrites an existing /etc/nspvend/config.toml.
#
#   sudo systemd/install.sh              install into / and enable the service
#   systemd/install.sh --root DIR        install into a throwaway root (tests, images)
#
# Puts: the package in a virtualenv under /opt/nspvend/venv, the unit in
# /etc/systemd/system, an example config in /etc/nspvend/config.toml (only if none),
# a system user "nspvend" in the gpio and dialout groups; state lives in /var/lib/nspvend.
set -eu

ROOT=/
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
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
    for group in gpio dialout; do
        grep -q "^$group:" "$P/etc/group" || groupadd $prefix --system "$group"
    done
    if grep -q "^nspvend:" "$P/etc/passwd"; then
        usermod $prefix -a -G gpio,dialout nspvend
    else
        useradd $prefix --system --user-group --groups gpio,dialout --no-create-home \
            --home-dir /var/lib/nspvend --shell /usr/sbin/nologin \
            --comment "nspvend vending controller" nspvend
        say "created the system user nspvend"
    fi
else
    say "no $P/etc/passwd: not creating the user"
fi

# 2. the package, in its own virtualenv
mkdir -p "$P/opt/nspvend"
if [ ! -x "$P/opt/nspvend/venv/bin/python" ]; then
    # system site packages: python3-lgpio from apt is the GPIO pin factory on Bookworm
    python3 -m venv --system-site-packages "$P/opt/nspvend/venv"
fi
"$P/opt/nspvend/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    ${NSPVEND_PIP_OPTIONS:-} "$SRC"
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
    chgrp nspvend /etc/nspvend /etc/nspvend/config.toml  # readable by the service, not by all
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

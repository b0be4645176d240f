#!/bin/sh
# Remove the nspvend service and its virtualenv.  Keeps the data (/var/lib/nspvend: counts
# not yet sent to the hub, usage history), the config (/etc/nspvend) and the user.
#
#   sudo systemd/uninstall.sh            from /
#   systemd/uninstall.sh --root DIR      from a throwaway root
set -eu
ROOT=/
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$ROOT" && pwd)
P=${ROOT%/}
if [ "$ROOT" = / ]; then
    systemctl disable --now nspvend.service 2>/dev/null || true
else
    systemctl --root="$P" disable nspvend.service >/dev/null 2>&1 || true
fi
rm -f "$P/etc/systemd/system/nspvend.service" \
      "$P/etc/systemd/system/multi-user.target.wants/nspvend.service"
[ "$ROOT" = / ] && systemctl daemon-reload || true
rm -rf "$P/opt/nspvend"
echo "uninstall.sh: removed the service and /opt/nspvend; kept /var/lib/nspvend, /etc/nspvend and the user nspvend"

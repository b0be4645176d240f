"""systemd's notify protocol (sd_notify(3)), written out: one datagram per state change.

``READY=1`` once the daemon serves, ``WATCHDOG=1`` from the core loop while it turns,
``STOPPING=1`` at shutdown. Outside systemd (no ``$NOTIFY_SOCKET``) it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    """Talks to the service manager named by ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``."""

    def __init__(self, environ: dict | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address
        self.sock: socket.socket | None = None
        if address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # ping at half the timeout, as sd_watchdog_enabled(3) advises
        self.watchdog_interval_s = int(usec) / 2e6 if watched and self.sock else None
        self._last_ping = float("-inf")

    def notify(self, state: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(state.encode(), self.address)
        except OSError as e:
            log.warning("cannot tell systemd %r: %s", state, e)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def alive(self) -> None:
        """Called by the core loop on every turn; pings the watchdog when one is due."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

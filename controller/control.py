"""The local control socket: JSON lines over a Unix socket, the same commands as the hub.

The server hands each request to the daemon's event queue and waits for the
answer, so commands run in the core loop, one at a time, like everything else.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import uuid
from collections.abc import Callable
from typing import Any

from controller.vending import Command

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
ANSWER_TIMEOUT_S = 60


class _Handler(socketserver.StreamRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                self._send({"id": None, "ok": False,
                            "error": f"request: longer than {MAX_LINE} bytes"})
                return
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                self._send({"id": None, "ok": False, "error": "request: not valid JSON"})
                continue
            self._send(self.server.ask(request))

    def _send(self, answer: dict) -> None:
        self.wfile.write(json.dumps(answer).encode() + b"\n")
        self.wfile.flush()


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Listens on ``path``; ``post`` puts a :class:`Command` on the daemon's queue."""

    daemon_threads = True

    def __init__(self, path: str, post: Callable[[Any], None]) -> None:
        self.path, self.post = path, post
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # left by a crash; nobody can be listening on it now
        super().__init__(path, _Handler)
        os.chmod(path, 0o660)
        self._thread: threading.Thread | None = None

    def ask(self, request: Any) -> dict:
        done = threading.Event()
        box: list[dict] = []

        def reply(answer: dict) -> None:
            box.append(answer)
            done.set()

        self.post(Command(request, reply, origin="local"))
        if not done.wait(ANSWER_TIMEOUT_S):
            return {"id": request.get("id") if isinstance(request, dict) else None, "ok": False,
                    "error": "daemon: no answer in time; it may be busy or stuck"}
        return box[0]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class DaemonUnavailable(Exception):
    """Nothing answers on the control socket."""


def request(path: str, command: dict, timeout: float = ANSWER_TIMEOUT_S) -> dict:
    """Send one command to the daemon at ``path`` and return its answer."""
    command = {"id": f"cli-{uuid.uuid4().hex[:12]}", **command}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps(command).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise DaemonUnavailable(
            f"nspvend is not running (nothing at {path}: {e.strerror}); "
            "start it with `systemctl start nspvend` or `nspvend run`") from None
    except PermissionError:
        raise DaemonUnavailable(
            f"no permission to use {path}; run as root or as a member of the nspvend group"
        ) from None
    except TimeoutError:
        raise DaemonUnavailable(f"nspvend did not answer on {path} in {timeout:.0f} s") from None
    if not data:
        raise DaemonUnavailable(f"nspvend closed {path} without answering")
    return json.loads(data)

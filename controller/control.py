"""The local control socket: JSON lines over a Unix socket, the same commands as the hub.

The server hands each request to the daemon's event queue and waits for the
answer, so commands run in the core loop, one at a time, like everything else.
Only the owner and the socket's group (``control.group``, ``nspvend-staff`` by
default) may connect; every command is logged with the caller's uid; connections
are capped and an idle one is closed.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
import uuid
from collections.abc import Callable
from typing import Any

from controller.commands import Command
from controller.messages import decode_request, refusal

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
ANSWER_TIMEOUT_S = 60
MAX_CLIENTS = 16
IDLE_TIMEOUT_S = 120.0


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[1]


def user_name(uid: int | None) -> str:
    if uid is None:
        return "uid unknown"
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


class _Handler(socketserver.StreamRequestHandler):
    server: ControlServer
    timeout = IDLE_TIMEOUT_S  # a client that says nothing for this long is let go

    def handle(self) -> None:
        if not self.server.admit():
            try:
                self._send(refusal(None, f"control: {MAX_CLIENTS} staff tools are connected "
                                         "already; try again"))
            except OSError:
                pass  # it hung up before hearing so (a traceback in the journal otherwise)
            return
        try:
            self._serve(user_name(peer_uid(self.request)))
        except (OSError, ValueError):
            pass  # the client hung up or went quiet: nothing to tell anyone
        finally:
            self.server.leave()

    def _serve(self, who: str) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                self._send(refusal(None, f"request: longer than {MAX_LINE} bytes"))
                return
            if not line.strip():
                continue
            request, refused = decode_request(line)
            if refused is not None:
                self._send(refused)
                continue
            cmd = request.get("cmd") if isinstance(request, dict) else None
            log.info("local command %s from %s", str(cmd)[:40] if cmd else "(none)", who)
            self._send(self.server.ask(request))

    def _send(self, answer: dict) -> None:
        self.wfile.write(json.dumps(answer).encode() + b"\n")
        self.wfile.flush()


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Listens on ``path``; ``post`` puts a :class:`Command` on the daemon's queue.
    The socket is 0660, its group ``group`` (a name or a number) where this process may
    give it that group."""

    daemon_threads = True

    def __init__(self, path: str, post: Callable[[Any], None],
                 group: str | None = "nspvend-staff") -> None:
        self.path, self.post = path, post
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # left by a crash; nobody can be listening on it now
        super().__init__(path, _Handler)
        os.chmod(path, 0o660)
        if group:
            self._give_to_group(group)
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._thread: threading.Thread | None = None

    def _give_to_group(self, group: str) -> None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            log.info("control socket: there is no group %r; only %s may use %s", group,
                        user_name(os.getuid()), self.path)
            return
        try:
            os.chown(self.path, -1, gid)
        except OSError as e:
            log.warning("control socket: cannot give %s to group %s (%s); only %s may use it",
                        self.path, group, e.strerror, user_name(os.getuid()))

    def admit(self) -> bool:
        return self._clients.acquire(blocking=False)

    def leave(self) -> None:
        self._clients.release()

    def ask(self, request: Any) -> dict:
        done = threading.Event()
        box: list[dict] = []

        def reply(answer: dict) -> None:
            box.append(answer)
            done.set()

        self.post(Command(request, reply, origin="local"))
        if not done.wait(ANSWER_TIMEOUT_S):
            return refusal(request.get("id") if isinstance(request, dict) else None,
                           "daemon: no answer in time; it may be busy or stuck")
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
            f"no permission to use {path}; run as root or as a member of the nspvend-staff "
            "group (sudo usermod -aG nspvend-staff $USER, then log in again)"
        ) from None
    except TimeoutError:
        raise DaemonUnavailable(f"nspvend did not answer on {path} in {timeout:.0f} s") from None
    if not data:
        raise DaemonUnavailable(f"nspvend closed {path} without answering")
    return json.loads(data)

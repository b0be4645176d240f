"""The control socket on the machine: who may use it, what it logs, and what it withstands."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest

from controller import control
from controller.control import ControlServer
from tests.daemon_process import DaemonProcess, ask, ask_raw
from tests.test_daemon_cli import CONFIG

STAFF_GID, STAFF_UID, STRANGER_UID = 54321, 54320, 54322
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")


@pytest.fixture
def machine(tmp_path: Path):
    """The daemon with its socket in a folder other users may enter (as /run/nspvend is)."""
    public = Path(tempfile.mkdtemp(prefix="nspvend-sock-"))
    public.chmod(0o755)
    config = tmp_path / "nspvend.toml"
    config.write_text(CONFIG.replace('socket = "control.sock"',
                                     f'socket = "{public}/control.sock"\ngroup = "{STAFF_GID}"'))
    daemon = DaemonProcess(config)
    yield tmp_path, public / "control.sock", daemon
    if daemon.proc.poll() is None:
        daemon.kill()
    shutil.rmtree(public, ignore_errors=True)


def as_user(uid: int, gid: int, sock: Path, request: dict) -> str:
    """Run ``request`` on the socket in a child process that is ``uid``/``gid`` and no one
    else; the child's answer, or the name of the error that stopped it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, try, report, vanish
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                result = json.dumps(ask(sock, request))
            except OSError as e:
                result = type(e).__name__
            os.write(write, result.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


@root_only
def test_only_the_staff_group_may_use_the_socket_and_the_log_names_the_caller(machine):
    tmp, sock, daemon = machine
    mode = os.stat(sock)
    assert stat.S_IMODE(mode.st_mode) == 0o660 and mode.st_gid == STAFF_GID
    staff = as_user(STAFF_UID, STAFF_GID, sock, {"id": "s1", "cmd": "slot_count"})
    assert json.loads(staff)["error"].startswith("cmd:")  # let in, and answered
    assert as_user(STRANGER_UID, STRANGER_UID, sock, {"id": "x1", "cmd": "status"}) == \
        "PermissionError"
    assert any(f"local command slot_count from uid {STAFF_UID}" in line for line in daemon.log)
    assert not any(f"uid {STRANGER_UID}" in line for line in daemon.log)


def test_the_database_is_for_the_service_alone(machine):
    tmp, _, daemon = machine
    for path in (tmp / "data", tmp / "data" / "nspvend.db"):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, oct(os.stat(path).st_mode)


def test_a_60000_deep_line_a_hang_up_and_a_crowd_get_answers_not_tracebacks(machine):
    tmp, sock, daemon = machine
    deep = b"[" * 60_000 + b"\n"  # what made json.loads recurse until it raised
    assert ask_raw(sock, deep)["error"] == "request: larger than 16384 bytes"
    deep = b"[" * 10_000 + b"\n"
    assert ask_raw(sock, deep)["error"] == "request: nested deeper than 32 levels"
    for _ in range(20):  # ask and hang up before the answer
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            s.sendall(b'{"id": "gone", "cmd": "status"}\n')
    crowd = []
    while len(crowd) < control.MAX_CLIENTS:  # staff tools holding their connections, each
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # answered once: taken in
        s.connect(str(sock))  # blocking: a full backlog waits rather than fails
        s.settimeout(10)
        s.sendall(b'{"id": "held", "cmd": "status"}\n')
        if json.loads(s.makefile().readline())["ok"]:
            crowd.append(s)
        else:  # a hung-up client above still had its place: it is let go, try again
            s.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
        extra.settimeout(10)
        extra.connect(str(sock))
        refused = json.loads(extra.makefile().readline())
    assert refused["ok"] is False and refused["error"].startswith("control: 16 staff tools")
    threads = int(next(line.split()[1] for line in open(f"/proc/{daemon.proc.pid}/status")
                       if line.startswith("Threads:")))
    assert threads < control.MAX_CLIENTS + 10
    for s in crowd:
        s.close()
    deadline = time.monotonic() + 10
    while True:  # the crowd has gone: room again
        answer = ask(sock, {"id": "after", "cmd": "status"})
        if answer.get("ok") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answer["ok"]
    assert daemon.terminate() == 0
    assert not any("Traceback" in line or "Error" in line for line in daemon.log), daemon.log


def test_an_idle_connection_is_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(control._Handler, "timeout", 0.3)
    server = ControlServer(str(tmp_path / "c.sock"), lambda event: None, group=None)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(tmp_path / "c.sock"))
            assert s.recv(100) == b""  # closed by the server, having heard nothing
    finally:
        server.close()

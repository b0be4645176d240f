"""Start the real daemon as a separate process, as systemd would, and talk to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def nspvend(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """Run the ``nspvend`` command and capture what it prints."""
    return subprocess.run([sys.executable, "-m", "controller", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, **kw)


class DaemonProcess:
    """``nspvend run --config PATH`` in the background; ``ready`` once it says so."""

    def __init__(self, config_path: Path, env: dict | None = None,
                 program: tuple[str, ...] = ("-m", "controller", "run"),
                 bucket_s: float | None = None) -> None:
        """``bucket_s``: usage buckets of that many seconds (tests/short_buckets.py), so what
        a vend causes is told within seconds, not at the end of a minute or an hour."""
        self.config_path = config_path
        if bucket_s is not None:
            program = ("-m", "tests.short_buckets")
            env = {**(env or {}), "NSPVEND_TEST_BUCKET_S": str(bucket_s)}
        self.proc = subprocess.Popen(
            [sys.executable, *program, "--config", str(config_path)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NSPVEND_LOG_LEVEL": "INFO", **(env or {})},
        )
        self.log: list[str] = []
        self.arrivals: list[float] = []  # when each log line arrived (time.time())
        self.said_ready = False
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ready.wait(30)
        if not self.said_ready:
            self.kill()
            raise AssertionError("daemon never became ready:\n" + "".join(self.log))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.arrivals.append(time.time())
            self.log.append(line)
            if "nspvend ready" in line:
                self.said_ready = True
                self.ready.set()
        self.ready.set()  # it exited: stop waiting

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class BoardProcess:
    """``python -m simulator board`` as its own process: the truth outlives every kill."""

    def __init__(self, tmp: Path, turn_ms: int = 40) -> None:
        self.tmp = tmp
        self.control = tmp / "sim.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "board", "--link", str(tmp / "board.tty"),
             "--control", str(self.control), "--slots", "3", "--turn-ms", str(turn_ms)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if "board simulator" in line:
                break
        else:
            raise AssertionError("board simulator did not start")
        # keep reading its log, so a long run never blocks it on a full pipe
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def ask(self, request: dict) -> dict:
        return ask(self.control, request)

    def settled(self, timeout: float = 20) -> dict:
        """Wait until every press the board saw is in the daemon's hands and no vend runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.ask({"op": "state"})
            if state["unacked_events"] == 0 and not state["vend_in_progress"]:
                return state
            time.sleep(0.02)
        raise AssertionError(f"board never settled: {state}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def hub_cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``nspvend hub ARGS --config CONFIG``, with ``stdin``."""
    return subprocess.run([sys.executable, "-m", "controller", "hub", *args, "--config",
                           str(config)], input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def add_user(config: Path, name: str, role: str, password: str) -> None:
    """``nspvend hub user add NAME --role ROLE``, the password on stdin; it must work."""
    added = hub_cli(config, "user", "add", name, "--role", role, stdin=password + "\n")
    assert added.returncode == 0, added.stderr


def ask(path: Path | str, request: dict) -> dict:
    """One JSON-lines request on a Unix socket, one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(s.makefile().readline())


def wait_until(predicate, what: str, timeout: float = 20, every: float = 0.05):
    """Poll ``predicate`` until it is true (its value is returned), or fail naming ``what``
    after ``timeout`` seconds: for a state another process reaches, with no event to await."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened in {timeout} s: {what}")
        time.sleep(every)
    return value


def load_and_count(folder: Path, packs: dict[int, int], world: str = "sim.sock") -> None:
    """Staff put ``packs`` into slots (the physical world at ``folder/world``) and tell the
    daemon (its control socket in ``folder``) what they put in: a refill per slot."""
    for slot, count in packs.items():
        assert ask(folder / world, {"op": "load", "slot": slot, "count": count})["ok"]
        assert ask(folder / "control.sock", {"id": f"load-{slot}-{time.monotonic_ns()}",
                                             "cmd": "refill", "slot": slot, "count": count})["ok"]


def dropped(folder: Path, world: str = "sim.sock") -> int:
    """Packs that have physically dropped, all slots (the world at ``folder/world``)."""
    return sum(s["packs_dropped"] for s in ask(folder / world, {"op": "state"})["slots"])


def ask_raw(path: Path | str, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(data)
        return json.loads(s.makefile().readline())


def counted_packs(db_path: Path | str) -> tuple[int, int]:
    """Packs counted in a machine's database, open bucket included, read straight from the
    file (the daemon answers only for closed buckets): (confirmed, unconfirmed)."""
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT coalesce(sum(confirmed), 0), coalesce(sum(unconfirmed), 0)"
                          " FROM bucket_counts").fetchone()
    finally:
        db.close()


class HubProcess:
    """``nspvend hub run --config PATH`` in the background; ``ready`` once it serves."""

    def __init__(self, config_path: Path, env: dict | None = None, args: tuple = ()) -> None:
        self.config_path = config_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "hub", "run", "--config", str(config_path),
             *args],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NSPVEND_LOG_LEVEL": "INFO", **(env or {})})
        self.log: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self.ready.wait(30)
        if not any("nspvend hub ready" in line for line in self.log):
            self.kill()
            raise AssertionError("the hub never became ready:\n" + "".join(self.log))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            if "nspvend hub ready" in line:
                self.ready.set()
        self.ready.set()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code once it has stopped (what it logged, if it does not)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the hub did not stop within {timeout:.0f} s of SIGTERM; it "
                                 "said:\n" + "".join(self.log[-30:])) from None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

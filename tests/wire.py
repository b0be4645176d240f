"""Test wiring for the serial board: pty pairs, a relay that can add noise, and the bench firmware.

The board and the host each open the slave of their own pty; a relay thread
copies bytes between the two masters, so a test can corrupt, drop or
duplicate bytes on the way, as a noisy cable would.
"""

from __future__ import annotations

import json
import os
import pty
import random
import select
import shutil
import subprocess
import sys
import threading
import tty
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which(
    "micropython")


class Pty:
    """A raw pty pair; ``path`` is the tty a program opens."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


Noise = Callable[[bytes], bytes]


class Noisy:
    """Damages bytes at a rate: each byte may be flipped, dropped or doubled."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.random = random.Random(seed)
        self.damaged = 0
        self.enabled = True

    def __call__(self, data: bytes) -> bytes:
        if not self.enabled or not self.rate:
            return data
        out = bytearray()
        for byte in data:
            if self.random.random() >= self.rate:
                out.append(byte)
                continue
            self.damaged += 1
            kind = self.random.randrange(3)
            if kind == 0:
                out.append(byte ^ (1 << self.random.randrange(8)))
            elif kind == 2:
                out += bytes([byte, byte])
        return bytes(out)


class Relay:
    """Copies bytes between two pty masters in a thread, through a noise function."""

    def __init__(self, board: Pty, host: Pty, noise: Noise | None = None,
                 to_host: Noise | None = None) -> None:
        """``noise`` damages bytes both ways; ``to_host`` filters what the board says."""
        self.board, self.host = board, host
        self.noise = noise or (lambda data: data)
        self.to_host = to_host or (lambda data: data)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pairs = {self.board.master: self.host.master, self.host.master: self.board.master}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(pairs), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    damaged = self.noise(data)
                    if fd == self.board.master:
                        damaged = self.to_host(damaged)
                    try:
                        os.write(pairs[fd], damaged)
                    except OSError:
                        pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class BenchBoard:
    """The firmware under the real MicroPython interpreter, on a pty, with its bench world."""

    def __init__(self, link: Pty, turn_ms: int = 40, slots: int = 4,
                 protocol: int | None = None) -> None:
        if MICROPYTHON is None:
            raise RuntimeError("micropython is not installed: scripts/setup installs it")
        self.link, self.turn_ms, self.slots, self.protocol = link, turn_ms, slots, protocol
        self.control = Pty()
        self.proc: subprocess.Popen | None = None
        self.boot_id = ""
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MICROPYTHON, "firmware_py/bench.py", self.link.path, self.control.path,
             str(self.turn_ms), str(self.slots),
             *([str(self.protocol)] if self.protocol is not None else [])],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "MICROPYPATH": str(ROOT)},
        )
        line = self.proc.stdout.readline()
        if "up" not in line:
            raise RuntimeError(f"bench firmware did not start: {line}{self.proc.stdout.read()}")
        self.boot_id = line.split()[2]

    def ask(self, request: dict) -> dict:
        os.write(self.control.master, json.dumps(request).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.control.master], [], [], 10)
            if not ready:
                raise TimeoutError(f"bench board did not answer {request}")
            line += os.read(self.control.master, 4096)
        return json.loads(line)

    def kill(self) -> None:
        """Pull the power: the process dies at once, mid-whatever."""
        self.proc.kill()
        self.proc.wait(5)

    def reboot(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill()
        self.control.close()

"""A dispenser board at the end of a USB serial port, as a Pico is, for the firmware update
tests: the firmware in its own folder (its "flash") runs under the real MicroPython unix port
on a pty; a Ctrl-C from the host stops it and gives MicroPython's REPL (the unix port's,
which speaks the raw REPL mpremote uses) in that folder; when the REPL ends (a reset:
``machine.soft_reset()`` on the unix port), the firmware in the folder starts again, as it
was written. The host opens :attr:`UsbBoard.path`."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import threading
from pathlib import Path

from tests.wire import MICROPYTHON, Pty

ROOT = Path(__file__).resolve().parent.parent


def old_firmware(folder: Path, protocol: int, version: str) -> None:
    """The package's firmware as an older release had it: another link protocol and
    firmware version, in ``folder``'s /firmware_py and /main.py."""
    shutil.copytree(ROOT / "firmware_py", folder / "firmware_py",
                    ignore=shutil.ignore_patterns("__pycache__", "*.md", "bench.py"))
    protocol_py = folder / "firmware_py" / "protocol.py"
    text = protocol_py.read_text()
    assert "\nPROTOCOL = " in text
    protocol_py.write_text(text.replace("\nPROTOCOL = ", f"\nPROTOCOL = {protocol}  # was ", 1))
    board_py = folder / "firmware_py" / "board.py"
    board_py.write_text(board_py.read_text().replace('\nVERSION = "', f'\nVERSION = "{version}"  # ', 1))
    (folder / "main.py").write_text("import firmware_py.main\n")


class UsbBoard:
    def __init__(self, flash: Path, turn_ms: int = 30, slots: int = 4) -> None:
        if MICROPYTHON is None:
            raise RuntimeError("micropython is not installed: scripts/setup installs it")
        self.flash, self.turn_ms, self.slots = flash, turn_ms, slots
        self.usb = Pty()
        self.path = self.usb.path
        self.entry = flash.parent / "bench_entry.py"  # the bench's world, not on the flash
        shutil.copy(ROOT / "firmware_py" / "bench.py", self.entry)
        self.inner: Pty | None = None
        self.control: Pty | None = None
        self.proc: subprocess.Popen | None = None
        self.mode = ""
        self.boots = 0
        self.resets = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._run_firmware()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _end(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for p in (self.inner, self.control):
            if p is not None:
                p.close()

    def _run_firmware(self) -> None:
        self._end()
        self.inner, self.control = Pty(), Pty()
        self.proc = subprocess.Popen(
            [MICROPYTHON, str(self.entry), self.inner.path, self.control.path,
             str(self.turn_ms), str(self.slots)],
            cwd=self.flash, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "MICROPYPATH": str(self.flash)})
        self.mode = "firmware"
        self.boots += 1

    def _run_repl(self) -> None:
        self._end()
        self.inner, self.control = Pty(), None
        self.proc = subprocess.Popen([MICROPYTHON], cwd=self.flash, stdin=self.inner.slave,
                                     stdout=self.inner.slave, stderr=self.inner.slave)
        self.mode = "repl"

    def _relay(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                inner = self.inner.master
                if self.mode == "repl" and self.proc.poll() is not None:
                    self.resets += 1  # the REPL ended: the board restarts on its flash
                    self._run_firmware()
                    continue
            ready, _, _ = select.select([self.usb.master, inner], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                with self._lock:
                    if fd == self.usb.master:
                        if self.mode == "firmware" and b"\x03" in data:
                            self._run_repl()  # Ctrl-C: KeyboardInterrupt, then the REPL
                        target = self.inner.master
                    else:
                        if fd != self.inner.master:
                            continue  # from a process already replaced
                        target = self.usb.master
                try:
                    os.write(target, data)
                except OSError:
                    pass

    def ask(self, request: dict, timeout: float = 10) -> dict:
        """An op of the firmware bench's world (press, load, state...), while it runs."""
        with self._lock:
            control = self.control
        if control is None:
            raise RuntimeError("the board is in its REPL, not running its firmware")
        os.write(control.master, json.dumps(request).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([control.master], [], [], timeout)
            if not ready:
                raise TimeoutError(f"the board did not answer {request}")
            line += os.read(control.master, 4096)
        return json.loads(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            self._end()
        self.usb.close()

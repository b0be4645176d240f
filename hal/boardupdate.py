"""Writing the firmware this package ships (``firmware_py/``) to the dispenser board, over
the USB serial port it is wired by, with mpremote's raw-REPL transport (MicroPython's own
tool: Ctrl-C stops the firmware, Ctrl-A gives the raw REPL, code is sent and run).

What goes on the board: ``/firmware_py/*.py`` (but the test bench's ``bench.py``) and a
one-line ``/main.py``, as firmware_py/README.md says. The new files are written beside the
old ones (``/firmware_py.new``), each checked by its SHA-256 on the board, then swapped in
with two renames and checked again at their places; the old ones go last. The firmware's
hardware watchdog cannot be stopped once started, only fed: every step feeds it (for 8 s,
the longest the RP2040 allows), so the board does not restart in the middle. Then the board
is reset, and boots the new firmware.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware_py"
NOT_ON_THE_BOARD = {"bench.py"}  # the test bench's entry (the unix port), not the board's
MAIN = b"import firmware_py.main\n"
CHUNK = 512

# run on the board first: what the steps after it call (each one feeds the watchdog)
HELPERS = """
import os, hashlib
try:
    import machine
    _wd = machine.WDT(timeout=8000)
except Exception:
    _wd = None
def _feed():
    if _wd:
        _wd.feed()
def _put(p, b):
    f = open(p, 'ab')
    f.write(b)
    f.close()
    _feed()
def _gone(p):
    try:
        os.remove(p)
    except OSError:
        pass
    _feed()
def _hash(p):
    h = hashlib.sha256()
    f = open(p, 'rb')
    while True:
        b = f.read(256)
        if not b:
            break
        h.update(b)
    f.close()
    _feed()
    return h.digest()
def _tree(d):
    try:
        for n in os.listdir(d):
            os.remove(d + '/' + n)
        os.rmdir(d)
    except OSError:
        pass
    _feed()
def _swap():
    _tree('firmware_py.old')
    try:
        os.rename('firmware_py', 'firmware_py.old')
    except OSError:
        pass
    os.rename('firmware_py.new', 'firmware_py')
    _gone('main.py')
    os.rename('main.py.new', 'main.py')
    _tree('firmware_py.old')
"""
RESET = "import machine\nif hasattr(machine, 'reset'):\n    machine.reset()\nmachine.soft_reset()\n"


class UpdateError(Exception):
    """The board could not be written as asked (one line for a person)."""


def firmware_files() -> dict[str, bytes]:
    """What goes on the board: its path there -> the bytes."""
    files = {f"firmware_py/{p.name}": p.read_bytes() for p in sorted(FIRMWARE.glob("*.py"))
             if p.name not in NOT_ON_THE_BOARD}
    files["main.py"] = MAIN
    return files


def firmware_version() -> str:
    """The firmware version this package ships (``firmware_py/board.py``'s ``VERSION``)."""
    from firmware_py.board import VERSION

    return VERSION


def _staged(path: str) -> str:
    return path.replace("firmware_py/", "firmware_py.new/") if path.startswith(
        "firmware_py/") else path + ".new"


def write_firmware(port: str, say: Callable[[str], None] = print) -> int:
    """Write the firmware to the board on ``port`` and reset it; returns how many files.
    Raises :class:`UpdateError` when the board cannot be reached or holds other bytes than
    were sent (the old firmware is then still in place, unless the swap itself failed)."""
    from mpremote.transport import TransportError, TransportExecError
    from mpremote.transport_serial import SerialTransport

    files = firmware_files()
    try:
        transport = SerialTransport(port, baudrate=115200)
    except TransportError as e:
        raise UpdateError(f"cannot open {port}: {e}") from None
    try:
        transport.enter_raw_repl(soft_reset=False)  # stops the firmware (Ctrl-C), no reset
        transport.exec(HELPERS)
        transport.exec("_tree('firmware_py.new')\nos.mkdir('firmware_py.new')")
        for path, data in files.items():
            staged = _staged(path)
            transport.exec(f"_gone({staged!r})")
            for i in range(0, len(data), CHUNK):
                transport.exec(f"_put({staged!r}, {data[i:i + CHUNK]!r})")
            _check(transport, staged, data, path)
        transport.exec("_swap()")
        for path, data in files.items():
            _check(transport, path, data, path, swapped=True)
            say(f"wrote {path} ({len(data):,} bytes, SHA-256 checked on the board)")
        transport.exec_raw_no_follow(RESET)
    except TransportExecError as e:
        raise UpdateError("the board refused a step: "
                          f"{e.error_output.strip().splitlines()[-1:] or e}") from None
    except (TransportError, OSError) as e:
        raise UpdateError(f"lost the board on {port}: {e}") from None
    finally:
        try:
            transport.close()
        except Exception:  # noqa: BLE001 (a port already gone: nothing to close)
            pass
    return len(files)


def _check(transport, where: str, data: bytes, path: str,  # noqa: ANN001
           swapped: bool = False) -> None:
    got = transport.eval(f"_hash({where!r})")
    if got == hashlib.sha256(data).digest():
        return
    if swapped:  # the old firmware is gone: the watchdog restarts the board on these files
        raise UpdateError(f"{path}: the board holds other bytes than were sent (SHA-256 "
                          "differs) after the new files were put in place: run nspvend board "
                          "update again at once")
    raise UpdateError(f"{path}: the board holds other bytes than were sent (SHA-256 differs); "
                      "the old firmware is still in place: run nspvend board update again")

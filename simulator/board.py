"""The board simulator: the firmware's own logic on the physical model, behind a real pty.

``python -m simulator board --link PATH --control SOCKET`` makes a pty, links it
at PATH (the daemon opens PATH as its serial port) and answers the board
protocol exactly as the firmware does, because it *is* the firmware's code
(firmware_py.board) with a pin layer played by :class:`PhysicalMachine`.
"""

from __future__ import annotations

import logging
import os
import signal
import tty
from typing import Any

from firmware_py.board import Board, Timing
from firmware_py.loop import serve
from firmware_py.pins import TimedPins
from simulator.control import SimulatorControl
from simulator.model import PhysicalMachine

log = logging.getLogger(__name__)


class SimulatedBoard(Board):
    """The firmware's board, which can be made to go silent (``board_silent`` fault)."""

    def __init__(self, model: PhysicalMachine, *args: Any, **kwargs: Any) -> None:
        self.model = model
        self.turns_by_seq: dict[int, int] = {}  # the truth: motor starts per request, all boots
        self.press_to_motor_ms: list[int] = []  # finger down to motor on (bench/run.py)
        self.reboots = 0
        self._reboot_pending = False
        super().__init__(*args, **kwargs)

    def request_reboot(self, request: dict | None = None) -> None:
        """The board loses power for a moment (done by the serving loop, between steps)."""
        self._reboot_pending = True

    def poll(self) -> None:
        if self._reboot_pending:
            self._reboot_pending = False
            self.pins.all_off()  # a vend in progress stops dead; its memory is gone
            self.reboots += 1
            Board.__init__(self, self.pins, self.send, os.urandom(4).hex(), self.timing)
            log.info("board rebooted as %s", self.boot_id)
            self.start()
        super().poll()

    def _step_vend(self, now: Any) -> None:
        vend = self.vend
        before = vend is not None and vend["started"] is not None
        super()._step_vend(now)
        if vend is not None and not before and vend["started"] is not None:
            self.turns_by_seq[vend["seq"]] = self.turns_by_seq.get(vend["seq"], 0) + 1
            pressed = getattr(self.pins, "pressed", {})
            if pressed:
                self.press_to_motor_ms.append(now - max(pressed.values()))
                del self.press_to_motor_ms[:-1000]

    def receive(self, words: list[str]) -> None:
        if not self.model.board_silent:
            super().receive(words)

    def reply(self, name: str, **fields: Any) -> None:
        if not self.model.board_silent:
            super().reply(name, **fields)


def link_pty(path: str) -> tuple[int, int]:
    """Make a raw pty and point ``path`` at its tty; returns (master, slave) fds."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tmp = f"{path}.{os.getpid()}.tmp"
    os.symlink(os.ttyname(slave), tmp)
    os.replace(tmp, path)
    return master, slave


def run_board(link: str, control: str, slots: int = 8, buttons: int = 6,
              turn_ms: int = 1200) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code."""
    model = PhysicalMachine(slots)
    pins = TimedPins(model, slots, buttons, turn_ms=turn_ms)
    master, slave = link_pty(link)
    wire = open(master, "r+b", buffering=0)  # noqa: SIM115 - lives as long as the board
    boot_id = os.urandom(4).hex()
    timing = Timing(motor_timeout=max(4000, turn_ms * 3), drop_window=max(300, turn_ms),
                    min_turn=min(100, turn_ms // 2))
    board = SimulatedBoard(model, pins, wire.write, boot_id, timing)
    server = SimulatorControl(control, model, pins.press, extra_state=lambda: {
        "boot_id": board.boot_id, "vend_in_progress": board.vend is not None,
        "unacked_events": len(board.events), "motor_running": sorted(pins.running),
        "reboots": board.reboots, "requests_turned": len(board.turns_by_seq),
        "requests_turned_twice": sum(1 for n in board.turns_by_seq.values() if n > 1),
        "press_to_motor_ms": board.press_to_motor_ms[-200:]},
        extra_ops={"reboot": board.request_reboot})
    running = [True]

    def stop(signum: int, frame: Any) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("board simulator %s: %d slots, link %s -> %s, control %s", boot_id, slots, link,
             os.ttyname(slave), control)
    try:
        serve(board, wire, running=lambda: running[0])
    finally:
        server.close()
        for path in (link,):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.close(slave)
        wire.close()
    return 0

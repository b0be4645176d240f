"""A controller on the real serial backend, a pty and a relay away from the board's own logic
(firmware_py.board) running in a thread on the physical model.

Set up once here for the tests that need a board whose link drops, damages or lies: the
relay can damage bytes both ways (``noise``) or filter what the board says (``to_host``),
and the board class can be swapped for one that misbehaves.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from controller.clock import FakeClock
from controller.commands import run_command
from controller.config import Config
from controller.ledger import Ledger
from controller.vending import Tick, VendingMachine
from firmware_py.board import Timing
from firmware_py.loop import serve
from firmware_py.pins import TimedPins
from hal import ButtonPressed
from hal.serial import BoardConnection, LinkTiming, SerialHardware
from simulator.board import SimulatedBoard
from simulator.model import PhysicalMachine
from tests.wire import Noise, Pty, Relay


class CountingBoard(SimulatedBoard):
    """Remembers every sequence number whose motor it started."""

    def _start_vend(self, seq: int, slot: int) -> None:
        self.started.append(seq)
        super()._start_vend(seq, slot)


class BoardThread:
    """The board's firmware logic on ``model``, served on the pty ``wire`` in a thread."""

    def __init__(self, model: PhysicalMachine, wire: Pty, turn_ms: int = 30,
                 board_class: type[SimulatedBoard] = CountingBoard, boot: str = "rig1") -> None:
        self.pins = TimedPins(model, len(model.slots), 6, turn_ms=turn_ms)
        self.file = open(wire.path, "r+b", buffering=0)  # noqa: SIM115
        timing = Timing(motor_timeout=turn_ms * 4 + 100, drop_window=turn_ms * 2 + 50,
                        min_turn=turn_ms // 2)
        self.board = board_class(model, self.pins, self.file.write, boot, timing)
        self.board.started = []
        self.running = True
        self.thread = threading.Thread(
            target=serve, args=(self.board, self.file), kwargs={"running": lambda: self.running},
            daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.file.close()


class DropFrames:
    """Loses every frame of one kind the board sends (``D``: a vend's ``done``) while
    ``enabled``, whole, as a link that loses one vend's replies while pings get through."""

    def __init__(self, letter: bytes = b"D") -> None:
        self.letter, self.enabled, self.dropped = letter, True, 0
        self._partial = b""

    def __call__(self, data: bytes) -> bytes:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        kept = []
        for line in lines:
            if self.enabled and line.startswith(self.letter + b" "):
                self.dropped += 1
                continue
            kept.append(line + b"\n")
        return b"".join(kept)


class SerialRig:
    """``config``'s machine (``hal = "serial"``) filled to capacity, on a board in a thread.

    The controller runs on a :class:`FakeClock` and is driven by hand: :meth:`press` presses
    a button on the board and hands the controller what arrives; :meth:`tick` moves its
    clock. The board and the link run in real time.
    """

    def __init__(self, config: Config, *, noise: Noise | None = None,
                 to_host: Noise | None = None, board_class: type[SimulatedBoard] = CountingBoard,
                 timing: LinkTiming | None = None, turn_ms: int = 30, fill: bool = True) -> None:
        self.config = config
        self.model = PhysicalMachine(max(s.slot for s in config.slots))
        if fill:
            for s in config.slots:
                self.model.load(s.slot, s.capacity)
        self.board_side, self.host_side = Pty(), Pty()
        self.relay = Relay(self.board_side, self.host_side, noise, to_host=to_host)
        self.board = BoardThread(self.model, self.board_side, turn_ms, board_class)
        self.link = BoardConnection(self.host_side.path, timing=timing or LinkTiming(
            reply=0.15, tries=8, vend=3.0, ping=0.5, missed_pings=6))
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.clock = FakeClock()
        self.ledger = Ledger(config.database_path, config.machine_id)
        self.link.open(wait=10)
        self.hardware = SerialHardware(self.link)
        self.vm = VendingMachine(config, self.ledger, self.hardware, self.clock)
        self.vm.start()
        if fill:
            assert run_command(self.vm, {"id": "fill", "cmd": "refill", "all": True})["ok"]
        self.hardware.start(self.events.put)

    def press(self, button: int, timeout: float = 20) -> None:
        """Press ``button`` on the board; hand the controller everything up to the press."""
        self.board.pins.press(button)
        self.handle_until(lambda event: isinstance(event, ButtonPressed), timeout)

    def handle_until(self, done, timeout: float = 20) -> None:
        """Hand the controller what the board reports until ``done(event)``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            self.vm.handle(event)
            if done(event):
                return
        raise AssertionError("the board never reported it")

    def pump(self) -> list:
        """Hand the controller what is waiting now; returns it."""
        handled = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return handled
            self.vm.handle(event)
            handled.append(event)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.vm.handle(Tick())

    def totals(self) -> tuple[int, int]:
        """(confirmed, unconfirmed) packs counted, all products."""
        totals = self.ledger.totals()
        return (sum(t["confirmed"] for t in totals.values()),
                sum(t["unconfirmed"] for t in totals.values()))

    def close(self) -> None:
        self.link.close()
        self.board.stop()
        self.relay.stop()
        self.ledger.close()
        self.board_side.close()
        self.host_side.close()


def serial_config(tmp: Path, **overrides: object) -> Config:
    from tests.conftest import make_config

    return make_config(tmp, hal="serial", **overrides)

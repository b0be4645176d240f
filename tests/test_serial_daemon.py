"""Two processes, as on the machine: ``nspvend run`` (hal = "serial") and ``python -m simulator
board`` behind a pty. Presses become vends, counts equal the truth, kill -9 and all."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from tests.daemon_process import BoardProcess, DaemonProcess, counted_packs, nspvend
from tests.machines import machine_toml

CONFIG = machine_toml("serial-01", "serial", serial={"port": "board.tty"},
                      database={"path": "nspvend.db"}, control={"socket": "control.sock"},
                      capacity=40)


@pytest.fixture
def setup(tmp_path: Path):
    (tmp_path / "nspvend.toml").write_text(CONFIG)
    board = BoardProcess(tmp_path)
    for slot in (1, 2, 3):
        board.ask({"op": "load", "slot": slot, "count": 40})
    daemon = DaemonProcess(tmp_path / "nspvend.toml")
    assert cli(tmp_path, "refill", "--all").returncode == 0
    yield tmp_path, board, daemon
    if daemon.proc.poll() is None:
        daemon.kill()
    board.stop()


def cli(tmp: Path, *args: str):
    return nspvend("--config", str(tmp / "nspvend.toml"), *args)


def check_counts_match_the_truth(tmp: Path, board: BoardProcess) -> tuple[int, int]:
    board.settled()  # every press is in the daemon's queue...
    status = json.loads(cli(tmp, "status", "--json").stdout)  # ...and now handled
    confirmed, unconfirmed = counted_packs(tmp / "nspvend.db")
    truth = board.ask({"op": "state"})
    dropped = sum(s["packs_dropped"] for s in truth["slots"])
    assert status["open_vends"] == 0
    assert [s["packs_left"] for s in truth["slots"]] == [
        s["count"] for s in status["stock"]["slots"]]
    assert (confirmed, unconfirmed) == (dropped, 0)
    return dropped, confirmed


def test_presses_on_the_board_become_counted_vends(setup):
    tmp, board, daemon = setup
    for button in (1, 2, 1, 1):
        board.ask({"op": "press", "button": button})
        time.sleep(0.2)  # a person's pace of pressing
    dropped, _ = check_counts_match_the_truth(tmp, board)
    assert dropped == 4
    status = json.loads(cli(tmp, "status", "--json").stdout)
    assert status["state"]["faults"] == []
    assert status["state"]["temperature_c"] == 14.0


def test_a_jam_on_the_board_falls_back_and_is_reported(setup):
    tmp, board, _ = setup
    board.ask({"op": "fault", "slot": 1, "kind": "jam"})
    board.ask({"op": "press", "button": 1})
    check_counts_match_the_truth(tmp, board)
    status = json.loads(cli(tmp, "status", "--json").stdout)
    assert "slot 1: jam" in status["state"]["faults"]  # at once for staff at the machine
    truth = board.ask({"op": "state"})
    assert truth["slots"][1]["packs_dropped"] == 1


def test_the_door_on_the_board_puts_the_machine_in_service(setup):
    tmp, board, _ = setup
    board.ask({"op": "door", "open": True})
    board.settled()
    assert json.loads(cli(tmp, "status", "--json").stdout)["state"]["mode"] == "service"
    board.ask({"op": "door", "open": False})
    board.settled()
    assert json.loads(cli(tmp, "status", "--json").stdout)["state"]["mode"] == "in_service"


def test_kill_9_of_the_daemon_at_random_moments_loses_and_doubles_nothing(setup):
    tmp, board, daemon = setup
    rng = random.Random(20261125)
    kills = 0
    for _ in range(6):
        for _ in range(rng.randint(1, 3)):
            board.ask({"op": "press", "button": rng.choice([1, 2])})
            time.sleep(rng.uniform(0.0, 0.25))
        daemon.kill()  # kill -9: mid-vend, mid-commit or idle, wherever it is
        kills += 1
        daemon = DaemonProcess(tmp / "nspvend.toml")
    try:
        dropped, confirmed = check_counts_match_the_truth(tmp, board)
        assert dropped > 0
    finally:
        daemon.terminate()


def test_the_daemon_rides_out_the_board_going_away_and_coming_back(setup):
    tmp, board, daemon = setup
    board.ask({"op": "press", "button": 2})
    check_counts_match_the_truth(tmp, board)
    board.stop()  # USB unplugged
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        faults = json.loads(cli(tmp, "status", "--json").stdout)["state"]["faults"]
        if "board_offline" in faults:
            break
        time.sleep(0.1)
    assert "board_offline" in faults
    board = BoardProcess(tmp)  # plugged back in (a fresh board: its world starts empty)
    board.ask({"op": "load", "slot": 3, "count": 5})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        faults = json.loads(cli(tmp, "status", "--json").stdout)["state"]["faults"]
        if "board_offline" not in faults:
            break
        time.sleep(0.1)
    assert "board_offline" not in faults
    board.ask({"op": "press", "button": 2})
    board.settled()
    assert cli(tmp, "status").returncode == 0  # the press has been handled
    assert board.ask({"op": "state"})["slots"][2]["packs_dropped"] == 1
    events = cli(tmp, "events").stdout
    assert "board_offline" in events and "board_online" in events
    board.stop()

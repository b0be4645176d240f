"""Updating the dispenser board's firmware without a visit to its files: a Pi whose software
speaks a newer link protocol than its board's firmware says ``board_outdated`` (not just
offline), and ``nspvend board update`` writes the firmware this package ships with mpremote
(each file checked on the board by its SHA-256), resets the board and has the daemon serve
again; the counts are untouched. The board is the real firmware under the MicroPython unix
port, behind a pty that behaves as a Pico's USB serial port does (tests/usb_board.py): a
Ctrl-C stops the firmware and gives MicroPython's raw REPL, a reset starts what was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_py.board import VERSION
from firmware_py.protocol import PROTOCOL
from tests.daemon_process import DaemonProcess, counted_packs, nspvend, wait_until
from tests.machines import machine_toml
from tests.usb_board import UsbBoard, old_firmware
from tests.wire import MICROPYTHON

pytestmark = pytest.mark.skipif(MICROPYTHON is None, reason="needs the MicroPython unix port "
                                                            "(scripts/setup installs it)")

CONFIG = machine_toml("serial-01", "serial", serial={"port": "board.tty"},
                      database={"path": "nspvend.db"}, control={"socket": "control.sock"},
                      capacity=20)


def cli(tmp: Path, *args: str, timeout: float = 90):
    return nspvend("--config", str(tmp / "nspvend.toml"), *args, timeout=timeout)


def status(tmp: Path) -> dict:
    return json.loads(cli(tmp, "status", "--json").stdout)["state"]


def older_board(tmp: Path) -> tuple[UsbBoard, Path]:
    """A board whose firmware speaks the link protocol before this software's, at
    ``tmp/board.tty``; and its flash."""
    flash = tmp / "flash"
    flash.mkdir()
    old_firmware(flash, PROTOCOL - 1, "2")
    board = UsbBoard(flash)
    (tmp / "board.tty").symlink_to(board.path)
    return board, flash


def test_an_older_board_is_outdated_until_nspvend_board_update_and_the_counts_stay(tmp_path):
    board, flash = older_board(tmp_path)
    (tmp_path / "nspvend.toml").write_text(CONFIG)
    daemon = DaemonProcess(tmp_path / "nspvend.toml")
    try:
        assert cli(tmp_path, "refill", "--all").returncode == 0
        wait_until(lambda: "board_outdated" in status(tmp_path)["faults"], "board_outdated")
        events = json.loads(cli(tmp_path, "events", "--json").stdout)["events"]
        said = [e["detail"] for e in events if e["type"] == "board_outdated"]
        assert said and f"link protocol {PROTOCOL - 1}, older than this host's {PROTOCOL}" \
            in said[0] and "nspvend board update" in said[0]
        shown = cli(tmp_path, "status").stdout  # staff at the machine are told what to run
        assert "faults: board_outdated" in shown and "sudo nspvend board update" in shown
        before = counted_packs(tmp_path / "nspvend.db")

        done = cli(tmp_path, "board", "update")
        assert done.returncode == 0, done.stderr
        assert "vending paused" in done.stdout
        assert done.stdout.count("SHA-256 checked on the board") == 10  # 9 files and main.py
        assert f"the board answers with firmware {VERSION}; vending again" in done.stdout
        assert board.resets == 1 and board.boots == 2
        assert "PROTOCOL = 2" in (flash / "firmware_py" / "protocol.py").read_text()
        assert not (flash / "firmware_py.new").exists() and not (flash / "firmware_py.old").exists()

        wait_until(lambda: (s := status(tmp_path))["faults"] == [] and s["mode"] == "in_service"
                   and s.get("board_firmware") == VERSION, "serving again on the new firmware")
        assert counted_packs(tmp_path / "nspvend.db") == before  # the counts untouched
        kinds = [e["type"] for e in json.loads(cli(tmp_path, "events", "--json").stdout)["events"]]
        assert kinds.count("board_update") == 2 and "board_online" in kinds

        board.ask({"op": "load", "slot": 3, "count": 5})  # and it serves again
        board.ask({"op": "press", "button": 2})
        wait_until(lambda: counted_packs(tmp_path / "nspvend.db") == (before[0] + 1, 0),
                   "a pack from the updated board, counted")
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        board.close()


def test_board_update_without_a_board_of_its_own_says_so(tmp_path):
    (tmp_path / "nspvend.toml").write_text(machine_toml("sim-01", "sim", control={
        "socket": "control.sock"}, database={"path": "nspvend.db"}))
    done = cli(tmp_path, "board", "update")
    assert done.returncode == 1
    assert done.stderr.strip() == ("nspvend: board update: hal is 'sim': this machine has no "
                                   "dispenser board of its own")


def test_with_auto_update_the_daemon_updates_an_older_board_itself_in_its_hours(tmp_path):
    board, _ = older_board(tmp_path)
    (tmp_path / "nspvend.toml").write_text(machine_toml(
        "serial-01", "serial", serial={"port": "board.tty", "auto_update": True,
                                       "update_hours": ["Daily 00:00-23:59"]},
        database={"path": "nspvend.db"}, control={"socket": "control.sock"}, capacity=20))
    daemon = DaemonProcess(tmp_path / "nspvend.toml")
    try:
        wait_until(lambda: board.resets == 1, "the board updated and reset", timeout=60)
        wait_until(lambda: (s := status(tmp_path)).get("board_firmware") == VERSION
                   and s["mode"] == "in_service" and s["faults"] == [],
                   "the updated board's hello, and vending again")
        details = [e["detail"] for e in json.loads(cli(tmp_path, "events", "--json").stdout)[
            "events"] if e["type"] == "board_update"]
        assert any("[serial] auto_update: 10 files written" in d for d in details), details
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        board.close()

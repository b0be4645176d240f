"""The daemon as a real process on the simulator, and the staff CLI talking to it."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, ask, ask_raw, nspvend
from tests.machines import machine_toml

CONFIG = machine_toml(
    "e2e-01", "sim", sim={"control": "sim.sock"}, database={"path": "data/nspvend.db"},
    control={"socket": "control.sock"}, display={"messages": ["Free BBV testing at the Hub"]},
    products=[{"id": "syringe-1ml", "name": "1ml syringes x10", "button": 1},
              {"id": "foil", "name": "foil", "button": 2}])


@pytest.fixture
def machine(tmp_path: Path):
    config = tmp_path / "nspvend.toml"
    config.write_text(CONFIG)
    daemon = DaemonProcess(config)
    yield tmp_path, daemon
    if daemon.proc.poll() is None:
        daemon.kill()


def cli(tmp_path: Path, *args: str):
    return nspvend("--config", str(tmp_path / "nspvend.toml"), *args)


def test_presses_on_the_simulator_become_counted_vends_and_staff_see_them(machine):
    tmp, daemon = machine
    for slot, count in ((1, 20), (2, 20), (3, 10)):
        assert ask(tmp / "sim.sock", {"op": "load", "slot": slot, "count": count})["ok"]
    refill = cli(tmp, "refill", "--all", "--json")
    assert refill.returncode == 0, refill.stderr
    assert [s["count"] for s in json.loads(refill.stdout)["slots"]] == [20, 20, 10]

    for button in (1, 1, 2):
        assert ask(tmp / "sim.sock", {"op": "press", "button": button}) == {"ok": True}
    status = json.loads(cli(tmp, "status", "--json").stdout)
    assert status["stock"]["products"] == {
        "syringe-1ml": {"count": 38, "status": "ok", "name": "1ml syringes x10"},
        "foil": {"count": 9, "status": "ok", "name": "foil"}}
    truth = ask(tmp / "sim.sock", {"op": "state"})
    assert sum(s["packs_dropped"] for s in truth["slots"]) == 3
    assert [s["packs_left"] for s in truth["slots"]] == [
        s["count"] for s in status["stock"]["slots"]]

    usage = cli(tmp, "usage", "--csv")  # the open bucket's counts would time each vend
    assert list(csv.DictReader(io.StringIO(usage.stdout))) == []

    human = cli(tmp, "status")
    assert "mode: in_service" in human.stdout and "syringe-1ml" in human.stdout

    assert daemon.terminate() == 0
    db = sqlite3.connect(tmp / "data" / "nspvend.db")
    payloads = [json.loads(p) for (p,) in db.execute(
        "SELECT payload FROM outbox WHERE kind = 'usage'")]
    assert [p["counts"] for p in payloads] == [{"syringe-1ml": 2, "foil": 1}]
    again = DaemonProcess(tmp / "nspvend.toml")
    try:  # the stop closed the bucket: now staff can see and download its counts
        rows = list(csv.DictReader(io.StringIO(cli(tmp, "usage", "--csv").stdout)))
        assert {r["product"]: int(r["confirmed"]) for r in rows} == {"syringe-1ml": 2, "foil": 1}
    finally:
        assert again.terminate() == 0


def test_slot_commands_and_events_from_the_cli(machine):
    tmp, _ = machine
    assert cli(tmp, "slot", "disable", "2").returncode == 0
    stock = json.loads(cli(tmp, "stock", "--json").stdout)
    assert stock["slots"][1]["status"] == "disabled"
    assert cli(tmp, "slot", "enable", "2").returncode == 0
    configure = cli(tmp, "slot", "configure", "3", "--capacity", "12", "--low-at", "3")
    assert configure.returncode == 0, configure.stderr
    assert "slot 3: foil 0/12 (low at 3)" in configure.stdout
    events = cli(tmp, "events").stdout
    assert "slot_disabled slot 2" in events and "slot_configured slot 3" in events


def test_a_refused_command_exits_1_and_says_why(machine):
    tmp, _ = machine
    result = cli(tmp, "refill", "9", "3")
    assert result.returncode == 1
    assert result.stderr.strip() == "nspvend: refused: slot: there is no slot 9; slots are 1..3"


def test_bad_requests_on_the_control_socket_are_answered_and_the_daemon_carries_on(machine):
    tmp, daemon = machine
    sock = tmp / "control.sock"
    assert ask_raw(sock, b"this is not json\n") == {
        "id": None, "ok": False, "error": "request: not valid JSON"}
    assert ask(sock, {"id": "b1", "cmd": "refill", "slot": 2, "count": "lots"})["error"].startswith(
        "count:")
    assert ask(sock, ["refill"])["error"] == "request: must be a JSON object"
    huge = b'{"id": "' + b"x" * 70_000 + b'"}\n'
    assert ask_raw(sock, huge)["error"].startswith("request: longer than")
    assert ask(sock, {"id": "ok1", "cmd": "status"})["ok"] is True
    assert daemon.proc.poll() is None


def test_the_cli_says_plainly_when_the_daemon_is_not_running(tmp_path):
    config = tmp_path / "nspvend.toml"
    config.write_text(CONFIG)
    result = nspvend("--config", str(config), "status")
    assert result.returncode == 69
    assert result.stderr.startswith("nspvend: nspvend is not running")
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_exits_0_and_a_restart_keeps_the_counts(machine):
    tmp, daemon = machine
    ask(tmp / "sim.sock", {"op": "load", "slot": 3, "count": 10})
    assert cli(tmp, "refill", "3", "10").returncode == 0
    ask(tmp / "sim.sock", {"op": "press", "button": 2})
    assert cli(tmp, "stock", "--json").returncode == 0  # the press has been handled
    assert daemon.terminate() == 0
    again = DaemonProcess(tmp / "nspvend.toml")
    try:
        totals = json.loads(cli(tmp, "usage", "--json").stdout)["totals"]
        assert totals == {"foil": {"confirmed": 1, "unconfirmed": 0}}
        assert json.loads(cli(tmp, "stock", "--json").stdout)["slots"][2]["count"] == 9
    finally:
        assert again.terminate() == 0

"""Enrolment: the hub stores only the machines it knows (hub.toml's [[machines]], or those
staff enrolled with ``nspvend hub machine add``); any other id is written down among at most
100 "asking to join", so a typo shows on the board and a flood of made-up ids costs nothing.
A real hub process, a real broker, the command line as staff type it."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import uuid

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import MOSQUITTO, Subscriber
from tests.daemon_process import hub_cli, wait_until
from tests.test_hub import Hub

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

STATE = {"schema": 1, "mode": "in_service", "door": "closed", "sharps_bin": "ok",
         "temperature_c": None, "faults": ["slot 1: jam"], "version": "t", "uptime_s": 1,
         "clock_synced": True, "ts": "2026-12-01T10:00:00Z"}


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path)
    yield h
    h.close()


def test_a_machine_is_stored_once_enrolled_and_no_longer_once_removed(hub, tmp_path):
    staff = hub.client("sam")
    say = Subscriber(hub.broker.port, "nothing/#")
    try:
        say.publish("nspvend/well-st-01/state", json.dumps(STATE))
        wait_until(lambda: "well-st-01" in staff.get("/")[2], "asking to join, on the board")
        page = staff.get("/")[2]
        assert "Asking to join" in page and "nspvend hub machine add" in page
        assert sorted(m["id"] for m in staff.json("/api/machines")) == ["hub-a", "hub-b"]

        keys = tmp_path / "keys"
        added = hub_cli(hub.config, "machine", "add", "well-st-01", "--name", "Well Street",
                        "--area", "Hackney", "--site", "site-hackney", "--out", str(keys))
        assert added.returncode == 0, added.stderr
        for secret in ("well-st-01.password", "well-st-01.key"):
            mode = (keys / secret).stat().st_mode
            assert stat.S_IMODE(mode) == 0o600 and len((keys / secret).read_text()) > 20
        out = added.stdout
        assert '[mqtt]\nhost = "127.0.0.1"' in out and 'username = "well-st-01"' in out
        assert f'mosquitto_passwd -b /etc/mosquitto/nspvend.passwd well-st-01 "$(cat {keys}' in out
        assert "topic write nspvend/well-st-01/usage" in out
        assert "topic read nspvend/well-st-01/cmd" in out
        assert "nspvend/+/" not in out  # a site account gets its machines, no wildcard
        listed = hub_cli(hub.config, "machine", "list").stdout
        assert re.search(r"well-st-01\s+Well Street\s+Hackney\s+enrolled", listed), listed
        assert re.search(r"hub-a\s+Mare Street", listed)

        say.publish("nspvend/well-st-01/state", json.dumps(STATE))  # known within seconds
        def stored() -> bool:  # known at once; its messages stored once the hub has heard
            if any(m["id"] == "well-st-01" and m["faults"] for m in staff.json("/api/machines")):
                return True
            say.publish("nspvend/well-st-01/state", json.dumps(STATE))  # (within 2 s)
            return False

        wait_until(stored, "the enrolled machine's state stored", timeout=20, every=0.5)
        assert "Well Street" in staff.get("/?area=Hackney")[2]
        assert "Asking to join" not in staff.get("/")[2]

        wait_until(lambda: 'data-type="jam"' in staff.get("/alerts")[2], "its jam raised")
        removed = hub_cli(hub.config, "machine", "remove", "well-st-01")
        assert removed.returncode == 0 and "history stays" in removed.stdout
        wait_until(lambda: "well-st-01" not in [m["id"] for m in staff.json("/api/machines")],
                   "gone from the board")
        now_part = staff.get("/alerts")[2].split("The last 30 days")[0]
        assert 'data-type="jam"' not in now_part  # its alerts ended with it
        again = hub_cli(hub.config, "machine", "remove", "hub-a")
        assert again.returncode == 64 and "remove its [[machines]] entry" in again.stderr
        bad = hub_cli(hub.config, "machine", "add", "Not An Id!", "--name", "x")
        assert bad.returncode == 64 and bad.stderr.count("\n") == 1
    finally:
        say.close()


def test_ten_thousand_made_up_ids_store_nothing_and_the_board_stays_small(hub):
    staff = hub.client("sam")
    flood = paho.Client(CallbackAPIVersion.VERSION2)
    flood.connect("127.0.0.1", hub.broker.port)
    flood.loop_start()
    try:
        for _ in range(10000):
            flood.publish(f"nspvend/made-{uuid.uuid4().hex[:12]}/state", json.dumps(STATE))
        last = flood.publish("nspvend/hub-a/state", json.dumps(STATE), qos=1)
        last.wait_for_publish(30)
    finally:
        flood.loop_stop()
        flood.disconnect()
    wait_until(lambda: any(m["id"] == "hub-a" and m["faults"] for m in
                           staff.json("/api/machines")), "the known machine's state, after")
    db = sqlite3.connect(hub.tmp / "hub.db")
    assert db.execute("SELECT count(*) FROM machines").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM asking").fetchone()[0] == 100
    assert db.execute("SELECT count(*) FROM alerts WHERE machine != 'hub-a'").fetchone()[0] == 0
    page = staff.get("/")[2]
    assert page.count("<code>made-") == 100 and len(page) < 100_000
    log = "".join(hub.process.log)
    assert log.count("which nobody enrolled") <= 2  # a line a minute, not one a message


def test_a_command_key_the_hub_cannot_read_is_said_in_words(hub, tmp_path):
    keys = tmp_path / "keys"
    assert hub_cli(hub.config, "machine", "add", "locked-01", "--name", "Locked", "--out",
                   str(keys)).returncode == 0
    (keys / "locked-01.key").unlink()  # as good as a file the hub's user cannot read
    staff = hub.client("sam")
    wait_until(lambda: "locked-01" in [m["id"] for m in staff.json("/api/machines")],
               "known to the hub")
    status, answer = staff.post_json("/api/machines/locked-01/commands", {"cmd": "status"})
    assert status == 503 and "cannot read locked-01's command key" in answer["error"]
    assert "Traceback" not in "".join(hub.process.log)

"""Promise 2: nothing kept, logged or sent times a single vend to finer than the usage bucket.

Each test drives the controller with a hand-moved clock and reads what it told the hub
(``on_change``, the outbox), what it logged, and the raw bytes of its SQLite file.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from datetime import UTC, datetime

import pytest

from controller.clock import FakeClock, parse_iso
from controller.commands import run_command
from controller.ledger import Ledger
from controller.vending import Change
from tests.conftest import Rig, make_config

NIGHT = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
ISO = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def night_rig(tmp_path, **overrides) -> Rig:
    rig = Rig(make_config(tmp_path, **overrides), FakeClock(NIGHT))
    rig.fill_all()
    rig.changes.clear()
    return rig


def outbox(rig: Rig, kind: str) -> list[dict]:
    return [json.loads(p) for _, k, p in rig.ledger.outbox(10_000) if k == kind]


def event_types(rig: Rig) -> list[str]:
    return [e["type"] for e in outbox(rig, "event")]


def everything_a_client_can_cause(rig: Rig) -> None:
    """Presses that jam a slot, turn stock low and empty, vend from a hand-restocked slot
    counted empty, and vend blind with a stuck drop sensor."""
    rig.model.inject("jam", 1)
    rig.press(1)  # slot 1 jams, slot 2 serves
    rig.refill(4, 2)
    for _ in range(3):  # naloxone: 2 -> 1 low, 0 empty, then an empty turn
        rig.press(3)
    rig.model.load(4, 3)  # staff restock by hand and forget to tell the machine
    rig.vm.slots[4].known_empty = False  # (a door they did not open: the worst case)
    rig.press(3)
    rig.model.inject("sensor_stuck")
    rig.press(2)


def test_a_press_tells_the_hub_nothing_and_logs_nothing_until_its_bucket_closes(
        tmp_path, caplog):
    rig = night_rig(tmp_path)
    caplog.set_level(logging.INFO)
    held_from = len(event_types(rig))
    rig.changes.clear()
    caplog.clear()
    everything_a_client_can_cause(rig)
    rig.tick(rig.vm.seconds_to_close() - 1)  # a second before the close: still nothing
    staff = {"refilled"}
    told = [c for c in rig.changes]
    # the only thing the hub heard was staff's refill in the middle
    assert set(told) <= {Change.STOCK, Change.STATE, Change.OUTBOX} and told.count(Change.STOCK) == 1
    assert [t for t in event_types(rig)[held_from:] if t not in staff] == []
    assert [r.getMessage() for r in caplog.records
            if r.name.startswith("controller.vending")] == []
    rig.changes.clear()
    rig.close_bucket()
    assert rig.changes == [Change.BUCKET]
    assert rig.vm.closed_at == NIGHT.replace(hour=3) and rig.vm.closed_news
    types = event_types(rig)[held_from:]
    assert {"jam", "low_stock", "empty", "stock_mismatch", "sensor_fault",
            "unconfirmed_vend"} <= set(types)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("controller.vending")]
    assert "slot 1 (syringe-1ml): jam: nothing dropped after 2 turns: jammed or empty" in lines
    assert "slot 4 (naloxone): empty: 0 left" in lines


def test_what_a_press_causes_is_told_with_its_bucket_stamped_with_the_bucket_end(tmp_path):
    rig = Rig(make_config(tmp_path), FakeClock(datetime(2026, 11, 25, 2, 7, 13, tzinfo=UTC)))
    rig.fill_all()
    before = rig.ledger.outbox_size()
    rig.model.inject("jam", 3)
    rig.press(2)
    rig.tick(rig.vm.seconds_to_close() - 1)  # 02:59:59
    assert rig.ledger.outbox_size() == before
    rig.tick(1)  # 03:00:00: the bucket 02:07:13-03:00 closes
    told = [(kind, json.loads(p)) for _, kind, p in rig.ledger.outbox(10_000)][before:]
    assert [kind for kind, _ in told] == ["usage", "event"]  # usage first, then what it caused
    usage, jam = told[0][1], told[1][1]
    assert usage["end"] == jam["ts"] == "2026-11-25T03:00:00Z" and jam["type"] == "jam"
    assert [e["ts"] for e in rig.ledger.events(1)] == [jam["ts"]]  # the local log: the same
    state = rig.vm.state_report(public=True, at=rig.vm.closed_at)
    stock = rig.vm.stock_report(public=True, at=rig.vm.closed_at)
    assert state["ts"] == stock["ts"] == "2026-11-25T03:00:00Z"
    assert "slot 3: jam" in state["faults"]


@pytest.mark.parametrize("how", ["graceful stop", "crash"])
def test_what_was_held_is_told_with_the_bucket_a_stop_or_a_crash_closes(tmp_path, how):
    rig = night_rig(tmp_path)
    rig.tick(20 * 60 + 17)  # 02:20:17
    rig.model.inject("jam", 3)
    rig.press(2)
    rig.tick(5 * 60)  # 02:25:17
    if how == "crash":
        rig.crash_restart()  # kill -9: the held jam is in the file; the open bucket is stale
    else:
        rig.restart()
    usage = outbox(rig, "usage")[-1]
    [jam] = [e for e in outbox(rig, "event") if e["type"] == "jam"]
    assert usage["counts"]["foil"] == 0 and usage["end"] == "2026-11-25T02:25:17Z"
    assert jam["ts"] == usage["end"] and jam["slot"] == 3
    rows = [json.loads(p)["id"] for _, _, p in rig.ledger.outbox(10_000)]
    assert rows.index(jam["id"]) == rows.index(usage["id"]) + 1
    assert rig.ledger.held_events() == []
    rig.tick(3600)
    assert event_types(rig).count("jam") == 1  # told once


def test_the_hub_sees_counts_as_at_the_last_bucket_close_and_a_jam_when_its_bucket_closes(
        tmp_path):
    rig = night_rig(tmp_path)
    rig.tick(3600)  # a bucket closes: the hub sees the full machine
    shown = rig.vm.stock_report(public=True)
    rig.model.inject("jam", 3)
    rig.press(2)
    rig.press(1)
    assert "slot 3: jam" in rig.vm.state_report()["faults"]  # staff at the machine see it
    assert rig.vm.state_report(public=True)["faults"] == []
    assert rig.vm.stock_report(public=True)["slots"] == shown["slots"]
    rig.changes.clear()
    rig.close_bucket()
    assert Change.BUCKET in rig.changes
    public = rig.vm.stock_report(public=True)
    assert public["slots"][2]["status"] == "fault"
    assert public["slots"][0]["count"] + public["slots"][1]["count"] == 19
    assert "slot 3: jam" in rig.vm.state_report(public=True)["faults"]
    assert rig.vm.stock_report(public=True)["slots"] == rig.vm.stock_report()["slots"]


def test_a_quiet_bucket_closes_with_no_news_and_a_staff_change_is_shown_at_once(tmp_path):
    rig = night_rig(tmp_path)
    rig.press(1)  # a vend that causes nothing but a count
    rig.close_bucket()
    assert not rig.vm.closed_news  # the stock interval may hold its stock back
    rig.changes.clear()
    assert rig.command(cmd="disable", slot=2)["ok"]
    assert Change.STOCK in rig.changes and Change.STATE in rig.changes
    shown = {s["slot"]: s for s in rig.vm.stock_report(public=True)["slots"]}
    assert shown[2]["status"] == "disabled"


def test_staff_changes_are_shown_at_once_without_the_vends_since_the_bucket_closed(tmp_path):
    rig = night_rig(tmp_path)
    rig.tick(3600)
    rig.press(1)  # slot 1 (10, the fullest, lowest number) serves: 9 live, 10 shown
    rig.changes.clear()
    assert rig.command(cmd="disable", slot=1)["ok"]
    assert rig.refill(2, 7)["ok"]
    assert Change.STOCK in rig.changes
    shown = {s["slot"]: s for s in rig.vm.stock_report(public=True)["slots"]}
    assert shown[1]["status"] == "disabled" and shown[1]["count"] == 10
    assert shown[2]["count"] == 7


def test_a_condition_that_repeats_on_every_vend_is_raised_once(tmp_path):
    rig = night_rig(tmp_path)
    rig.refill(4, 0)
    rig.model.load(4, 5)  # counted empty, holds five
    for _ in range(4):
        rig.press(3)
    rig.model.inject("sensor_stuck")
    for _ in range(4):
        rig.press(2)
    rig.close_bucket()
    types = event_types(rig)
    assert types.count("stock_mismatch") == 1
    assert (types.count("sensor_fault"), types.count("unconfirmed_vend")) == (1, 1)
    rig.model.sensor_stuck = False
    assert rig.command(cmd="refill", slot=4, count=0)["ok"]  # counted again: said again
    rig.press(3)
    rig.close_bucket()
    assert event_types(rig).count("stock_mismatch") == 2


def test_silence_is_decided_from_whole_empty_buckets_and_stamped_with_a_bucket_end(tmp_path):
    rig = night_rig(tmp_path, alerts={"silence_hours": 2})
    rig.tick(10 * 60)
    rig.press(2)  # 02:10: the bucket 02:00-03:00 holds a pack
    rig.tick(50 * 60)  # 03:00
    rig.tick(2 * 3600 - 1)
    assert "silence" not in event_types(rig)
    rig.tick(1)  # 05:00: 03:00-04:00 and 04:00-05:00 were empty
    [silence] = [e for e in outbox(rig, "event") if e["type"] == "silence"]
    assert silence["ts"] == "2026-11-25T05:00:00Z"
    rig.tick(5 * 3600)
    assert event_types(rig).count("silence") == 1
    rig.press(2)
    rig.tick(3 * 3600)  # the bucket with the pack resets it; two empty ones raise it again
    assert event_types(rig).count("silence") == 2


def test_no_row_keeps_a_vend_time_and_deleted_rows_do_not_linger_in_the_file(tmp_path):
    rig = night_rig(tmp_path)
    rig.model.inject("jam", 3)
    presses = []
    for minute, second in ((3, 7), (11, 41), (26, 13), (37, 29), (48, 53)):
        rig.clock.jump(NIGHT.replace(minute=minute, second=second))
        presses.append(rig.clock.now())
        rig.press(1 if minute % 2 else 2)
    db, wal = tmp_path / "nspvend.db", tmp_path / "nspvend.db-wal"
    assert rig.ledger.db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    columns = {r[1] for r in rig.ledger.db.execute("PRAGMA table_info(journal)")}
    assert columns == {"seq", "slot", "product", "board"}

    def times_in_the_files() -> set[datetime]:
        found = set()
        for path in (db, wal):
            if path.exists():
                found |= {parse_iso(m.decode()) for m in ISO.findall(path.read_bytes())}
        return found

    for moment in times_in_the_files():  # the bucket's bounds, staff's refills at 02:00
        assert (moment.minute, moment.second) == (0, 0), moment
    closed = len(outbox(rig, "usage"))
    rig.tick(3600)  # the bucket closes and the WAL is emptied into the file
    assert len(outbox(rig, "usage")) == closed + 1
    assert wal.stat().st_size == 0
    assert not times_in_the_files() & set(presses)


def test_the_hub_is_answered_from_what_was_published_and_never_the_open_bucket(tmp_path):
    rig = night_rig(tmp_path)
    rig.press(2)
    hub = run_command(rig.vm, {"id": "h1", "cmd": "status"}, "hub")["result"]
    assert set(hub) == {"state", "stock", "hub_open"}
    assert hub["stock"]["products"]["foil"]["count"] == 8
    local = run_command(rig.vm, {"id": "l1", "cmd": "status"}, "local")["result"]
    assert local["stock"]["products"]["foil"]["count"] == 7  # staff refilling need it
    assert "screen" not in local and "screen" not in hub
    for origin in ("hub", "local"):
        usage = run_command(rig.vm, {"id": f"u-{origin}", "cmd": "usage"}, origin)["result"]
        assert usage == {"buckets": [], "totals": {}}
        stock = run_command(rig.vm, {"id": f"s-{origin}", "cmd": "stock"}, origin)["result"]
        assert stock["products"]["foil"]["count"] == (8 if origin == "hub" else 7)


def test_the_retired_privacy_settings_start_with_one_warning_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    config = make_config(tmp_path, privacy={"event_delay_s": [60, 600], "event_round_s": 900})
    assert config.machine_id == "test-01"
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{tmp_path / 'nspvend.toml'}: privacy.event_delay_s, "
                           "privacy.event_round_s: retired and ignored"), line
    caplog.clear()
    make_config(tmp_path, privacy={"event_round_s": 900})
    assert [r.getMessage().split(": ")[1] for r in caplog.records] == ["privacy.event_round_s"]
    from controller.config import ConfigError

    with pytest.raises(ConfigError, match=r"privacy\.delay_s"):  # a typo is still refused
        make_config(tmp_path, privacy={"delay_s": 3})


def test_an_old_database_loses_its_vend_times_when_upgraded(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE slots (slot INTEGER PRIMARY KEY, product TEXT NOT NULL, count INTEGER NOT NULL,
            capacity INTEGER NOT NULL, low_at INTEGER NOT NULL, enabled INTEGER NOT NULL,
            fault TEXT, config_sig TEXT, known_empty INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE buckets (id TEXT PRIMARY KEY, start TEXT NOT NULL, planned_end TEXT,
            "end" TEXT, clock_synced INTEGER NOT NULL);
        CREATE TABLE bucket_counts (bucket_id TEXT REFERENCES buckets(id), product TEXT,
            confirmed INTEGER, unconfirmed INTEGER, PRIMARY KEY (bucket_id, product));
        CREATE TABLE journal (seq INTEGER PRIMARY KEY, slot INTEGER, product TEXT, started TEXT,
            board TEXT);
        CREATE TABLE outbox (id INTEGER PRIMARY KEY, kind TEXT, message_id TEXT, payload TEXT,
            created TEXT);
        CREATE TABLE events (id TEXT PRIMARY KEY, ts TEXT, type TEXT, slot INTEGER, product TEXT,
            detail TEXT);
        CREATE TABLE commands (id TEXT PRIMARY KEY, ts TEXT, result TEXT);
        INSERT INTO journal VALUES (7, 1, 'foil', '2026-11-20T03:14:15Z', 'b1');
        INSERT INTO events VALUES ('e1', '2026-11-20T03:14:16Z', 'low_stock', 1, 'foil', '2 left');
        INSERT INTO events VALUES ('e2', '2026-11-20T09:31:02Z', 'refilled', 1, 'foil', 'count 9');
        PRAGMA user_version = 2;
    """)
    old.close()
    ledger = Ledger(path, "m")
    assert [(v.seq, v.slot, v.board) for v in ledger.open_vends()] == [(7, 1, "b1")]
    ts = {e["type"]: e["ts"] for e in ledger.events(10)}
    assert ts == {"low_stock": "2026-11-20T03:00:00Z", "refilled": "2026-11-20T09:31:02Z"}
    ledger.truncate_wal()
    ledger.close()
    assert b"03:14:15" not in path.read_bytes() and b"03:14:16" not in path.read_bytes()


def test_a_line_per_vend_is_written_only_at_debug_level(tmp_path, caplog):
    rig = night_rig(tmp_path)
    caplog.set_level(logging.INFO)  # the default a machine runs at: no logger says a thing
    rig.press(2)
    rig.press(1)
    assert [r.getMessage() for r in caplog.records] == []
    caplog.set_level(logging.DEBUG)  # for a bench, never for a machine in service
    rig.press(2)
    per_vend = [r for r in caplog.records if "vend seq=" in r.getMessage()]
    assert [r.levelno for r in per_vend] == [logging.DEBUG]

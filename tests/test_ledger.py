"""The SQLite file itself: schema versions, journal durability settings, bounded logs."""

from __future__ import annotations

import json
import sqlite3

import pytest

from controller.clock import FakeClock
from controller.ledger import EVENT_LOG_LIMIT, SCHEMA_VERSION, Event, Ledger, StorageError


def test_a_new_file_gets_the_current_schema_in_wal_mode(tmp_path):
    ledger = Ledger(tmp_path / "a.db", "m")
    db = ledger.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert {"meta", "slots", "buckets", "bucket_counts", "journal", "outbox", "events",
            "commands"} <= set(db.table_names())
    ledger.close()
    Ledger(tmp_path / "a.db", "m").close()  # opening again changes nothing


def test_a_file_from_a_newer_version_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer nspvend"):
        Ledger(path, "m")


def test_the_event_log_is_bounded(tmp_path):
    ledger = Ledger(tmp_path / "e.db", "m")
    clock = FakeClock()
    with ledger.transaction():
        for i in range(EVENT_LOG_LIMIT + 50):
            ledger.add_event(Event("door_open", detail=str(i)), clock.now())
    count = ledger.db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert count == EVENT_LOG_LIMIT
    assert ledger.events(1)[0]["detail"] == str(EVENT_LOG_LIMIT + 49)
    ledger.close()


def test_a_journal_entry_is_on_disk_before_open_vend_returns(tmp_path):
    ledger = Ledger(tmp_path / "j.db", "m")
    ledger.open_vend(7, 3, "foil", FakeClock().now())
    other = sqlite3.connect(tmp_path / "j.db")  # another connection, as after a crash
    rows = other.execute("SELECT seq, slot, product FROM journal").fetchall()
    assert rows == [(7, 3, "foil")]
    other.close()
    ledger.close()


def test_a_full_outbox_drops_the_oldest_events_and_never_usage(tmp_path, monkeypatch):
    import controller.ledger

    monkeypatch.setattr(controller.ledger, "OUTBOX_LIMIT", 10)
    ledger = Ledger(tmp_path / "o.db", "m")
    clock = FakeClock()
    with ledger.transaction():
        for i in range(4):
            ledger.enqueue("usage", f"u{i}", {"id": f"u{i}"})
        for i in range(30):
            ledger.add_event(Event("door_open", detail=str(i)), clock.now())
        for i in range(4, 8):
            ledger.enqueue("usage", f"u{i}", {"id": f"u{i}"})
    rows = [(kind, json.loads(payload)) for _, kind, payload in ledger.outbox(limit=100)]
    assert [p["id"] for k, p in rows if k == "usage"] == [f"u{i}" for i in range(8)]
    events = [p["detail"] for k, p in rows if k == "event"]
    assert events == [str(i) for i in range(24, 30)]  # the newest, in order
    assert len(rows) == 14  # usage beyond the bound is kept: it is what commissioners count
    ledger.close()

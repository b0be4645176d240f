"""A failing or full disk never stops a client getting a pack; counts are saved when it clears."""

from __future__ import annotations

import sqlite3


def card_fails(rig) -> None:
    """Every write now fails, as when the kernel remounts a failing SD card read-only."""
    rig.ledger.db.execute("PRAGMA query_only = ON")


def card_recovers(rig) -> None:
    rig.ledger.db.execute("PRAGMA query_only = OFF")


def fill_disk(rig) -> None:
    """Use up every page the file may have, as on a full card (SQLITE_FULL on the next write)."""
    db = rig.ledger.db
    db.execute("CREATE TABLE filler (x BLOB)")
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages + 2}")
    try:
        while True:
            db.execute("INSERT INTO filler VALUES (zeroblob(1000))")
    except sqlite3.OperationalError as e:
        assert "full" in str(e)


def test_vending_goes_on_when_storage_fails_and_counts_are_saved_after(rig):
    card_fails(rig)
    for i in range(40):
        rig.press(1 + i % 2)
    assert "storage_fault" in rig.vm.state_report()["faults"]
    assert sum(rig.model.packs_dropped().values()) == 20 + 8  # every pack there came out
    assert rig.counts() == rig.model.packs_left()  # the controller's own view stayed right
    card_recovers(rig)
    rig.tick()
    assert "storage_fault" not in rig.vm.state_report()["faults"]
    totals = rig.ledger.totals()
    assert totals["syringe-1ml"]["confirmed"] == 20 and totals["foil"]["confirmed"] == 8
    assert rig.ledger.open_vends() == []
    rig.restart()
    assert rig.counts() == rig.model.packs_left()
    assert "storage_fault" in [e["type"] for e in rig.ledger.events(5)]


def test_a_bucket_closing_while_storage_fails_keeps_its_counts_in_order(rig):
    card_fails(rig)
    rig.press(1)
    rig.tick(3600)
    rig.press(1)
    card_recovers(rig)
    rig.tick()
    buckets = [b for b in rig.ledger.usage() if b["counts"]]
    assert [b["counts"].get("syringe-1ml") for b in buckets] == [1, 1]


def test_a_staff_command_on_a_full_disk_is_refused_and_changes_nothing(rig):
    fill_disk(rig)
    before = rig.vm.stock_report()["slots"]
    answer = rig.command(cmd="set_messages", messages=["x" * 200] * 20)
    assert answer["ok"] is False
    assert answer["error"].startswith("storage: cannot save the change")
    assert rig.vm.stock_report()["slots"] == before
    assert rig.vm.messages == ["Naloxone saves lives", "Free BBV testing"]
    rig.press(1)  # and a client is still served
    assert sum(rig.model.packs_dropped().values()) == 1

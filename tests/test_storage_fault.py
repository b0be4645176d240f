"""A failing or full disk never stops a client getting a pack; counts are saved when it clears."""

from __future__ import annotations

import sqlite3

import pytest

from controller.ledger import Event, SlotState
from tests.broker import MOSQUITTO, Broker, Subscriber, usage_totals
from tests.daemon_process import DaemonProcess, ask, dropped, load_and_count, wait_until
from tests.disk import Disk
from tests.machines import write_machine


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
    assert "storage_fault" in [e["type"] for e in rig.ledger.events(20)]


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


def test_a_machine_started_on_a_failing_card_still_vends_and_saves_later(rig, monkeypatch):
    import tests.conftest
    from controller.ledger import Ledger

    def read_only_ledger(*args, **kwargs):  # the card fails before the daemon starts
        ledger = Ledger(*args, **kwargs)
        ledger.db.execute("PRAGMA query_only = ON")
        return ledger

    rig.press(1)
    monkeypatch.setattr(tests.conftest, "Ledger", read_only_ledger)
    rig.crash_restart()  # no exception: it starts
    assert "storage_fault" in rig.vm.state_report()["faults"]
    for _ in range(3):
        rig.press(2)
    assert rig.model.packs_dropped()[3] == 3
    card_recovers(rig)
    rig.tick()
    assert "storage_fault" not in rig.vm.state_report()["faults"]
    assert rig.ledger.totals()["foil"]["confirmed"] == 3
    assert rig.ledger.totals()["syringe-1ml"]["confirmed"] == 1
    assert rig.ledger.open_vends() == []


def test_a_vend_settled_in_memory_is_not_settled_again_when_the_board_comes_back(rig):
    if rig.config.hal != "sim":
        pytest.skip("needs a board that can fall silent")
    vend = rig.hw.dispenser.vend

    def card_fails_mid_vend(slot: int, seq: int):
        outcome = vend(slot, seq)  # the journal entry is on the card; the motor has turned
        card_fails(rig)
        return outcome

    rig.hw.dispenser.vend = card_fails_mid_vend
    rig.press(1)  # counted in memory; its journal entry is still open on the card
    rig.hw.dispenser.vend = vend
    assert len(rig.ledger.open_vends()) == 1
    rig.model.inject("board_silent")
    rig.model.inject("clear")  # the board is back: the controller reconciles the journal
    card_recovers(rig)
    rig.tick()
    assert rig.ledger.totals()["syringe-1ml"] == {"confirmed": 1, "unconfirmed": 0}
    assert rig.ledger.open_vends() == []


def test_a_vend_number_used_while_the_card_failed_is_never_used_again(rig):
    card_fails(rig)
    rig.press(2)  # its journal entry and vend number could not be written
    card_recovers(rig)
    rig.tick()  # the changes kept in memory are written
    rig.crash_restart()
    before = rig.model.packs_dropped()[3]
    rig.press(2)  # a reused number would be answered from the hardware's memory: no turn
    assert rig.model.packs_dropped()[3] == before + 1
    assert rig.ledger.totals()["foil"]["confirmed"] == 2


def test_a_stop_while_the_card_fails_keeps_the_counts_to_send_and_says_what_it_lost(rig):
    card_fails(rig)
    for button in (1, 1, 2):
        rig.press(button)
    rig.vm.stop()  # the card is tried again, and fails again
    [usage] = rig.vm.unsaved_usage.values()
    assert usage["counts"] == {"syringe-1ml": 2, "foil": 1, "naloxone": 0}
    assert usage["id"] == rig.vm.ledger.open_bucket().id  # as a later re-close would send it
    summary = rig.vm.unsaved_summary()
    assert "the usage of 1 buckets (foil 1, syringe-1ml 2)" in summary
    assert "recount the slots" in summary


def test_a_stop_after_the_card_recovers_loses_nothing(rig):
    card_fails(rig)
    rig.press(1)
    card_recovers(rig)
    rig.vm.stop()
    assert rig.vm.unsaved_summary() is None and rig.vm.unsaved_usage == {}
    assert rig.ledger.totals() == {"syringe-1ml": {"confirmed": 1, "unconfirmed": 0}}


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")
def test_a_daemon_stopped_with_a_full_card_sends_its_counts_straight_to_the_hub(tmp_path):
    """The reviewer's reproduction: with the card failing, three presses gave three packs,
    then SIGTERM. The counts reach the hub all the same, once, and one line says so."""
    disk = Disk(tmp_path / "disk")
    if not disk.mounted:
        pytest.skip("mounting a small tmpfs needs root")
    broker = Broker(tmp_path / "broker")
    hub = Subscriber(broker.port, client_id="hub-under-test")
    path = write_machine(tmp_path, sim={"control": "sim.sock"},
                         database={"path": "disk/nspvend.db"}, control={"socket": "control.sock"},
                         mqtt={"host": "127.0.0.1", "port": broker.port})
    daemon = None
    try:
        daemon = DaemonProcess(path)
        load_and_count(tmp_path, {1: 20, 3: 10})
        disk.fill()
        for button in (1, 1, 2):
            ask(tmp_path / "sim.sock", {"op": "press", "button": button})
        wait_until(lambda: dropped(tmp_path) == 3, "three packs out")
        ask(tmp_path / "control.sock", {"id": "sync", "cmd": "stock"})  # all three handled
        assert daemon.terminate() == 0
        [line] = [line for line in daemon.log if "CRITICAL" in line]
        assert "stopping with the card failing" in line and "foil 1, syringe-1ml 2" in line
        assert "1 of 1 buckets sent straight to the hub" in line
        hub.wait_for(lambda m: usage_totals(hub.payloads("usage"))[0] == {
            "syringe-1ml": 2, "foil": 1})
        disk.free()
        daemon = DaemonProcess(path)  # the bucket left open on the card is closed again...
        assert daemon.terminate() == 0
        sent = hub.payloads("usage")
        again = [u for u in sent if u["id"] == sent[0]["id"]]
        assert len(again) >= 2  # ... under the same id, so the hub keeps the first, whole
        first = {}
        for u in sent:
            first.setdefault(u["id"], u)
        totals = {}
        for u in first.values():
            for product, n in u["counts"].items():
                totals[product] = totals.get(product, 0) + n
        assert {p: n for p, n in totals.items() if n} == {"syringe-1ml": 2, "foil": 1}
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            daemon.kill()
        hub.close()
        broker.kill()
        disk.close()


def test_a_file_that_is_not_a_database_is_kept_aside_and_a_new_one_made(tmp_path):
    from datetime import UTC, datetime

    from controller.ledger import open_ledger

    path = tmp_path / "nspvend.db"
    path.write_bytes(b"this was a database before the card went bad" * 100)
    now = datetime(2026, 12, 1, 3, 14, 15, tzinfo=UTC)
    ledger, note = open_ledger(str(path), "m", now)
    aside = tmp_path / "nspvend.db.bad-20261201T031415Z"
    assert aside.read_bytes().startswith(b"this was a database")
    assert "file is not a database" in note and str(aside) in note and "recount" in note
    assert ledger.slots() == {} and ledger.outbox_size() == 0
    ledger.close()
    again, note = open_ledger(str(path), "m", now)  # the new one opens as it is
    assert note is None
    again.close()


def test_what_still_reads_of_a_database_it_cannot_use_is_copied_over(tmp_path):
    """A database from a newer nspvend (or with a bad page elsewhere): the counts waiting
    to be sent, the slots and the vend numbers are read back into the new one."""
    from datetime import UTC, datetime

    from controller.ledger import Ledger, open_ledger

    path = tmp_path / "nspvend.db"
    old = Ledger(path, "m")
    with old.transaction():
        old.enqueue("usage", "b1", {"schema": 1, "id": "b1"})
        old.set_meta("last_seq", 41)
        old.save_slot(SlotState(1, "foil", 7, 10, 2))
    old.db.execute("PRAGMA user_version = 99")
    old.close()
    ledger, note = open_ledger(str(path), "m", datetime(2026, 12, 1, tzinfo=UTC))
    assert "newer nspvend" in note and "outbox 1" in note and "slots 1" in note
    assert [kind for _, kind, _ in ledger.outbox()] == ["usage"]
    assert ledger.meta("last_seq") == 41 and ledger.slots()[1].count == 7
    ledger.close()


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")
def test_a_machine_whose_database_is_corrupt_still_vends_and_says_so(tmp_path):
    broker = Broker(tmp_path / "broker")
    hub = Subscriber(broker.port, client_id="hub-under-test")
    path = write_machine(tmp_path, sim={"control": "sim.sock"}, database={"path": "nspvend.db"},
                         control={"socket": "control.sock"},
                         mqtt={"host": "127.0.0.1", "port": broker.port})
    daemon = None
    try:
        daemon = DaemonProcess(path)
        load_and_count(tmp_path, {3: 10})
        assert daemon.terminate() == 0
        db = tmp_path / "nspvend.db"
        damaged = b"\xff" * 100 + db.read_bytes()[100:]  # the header gone: not a database
        db.write_bytes(damaged)
        daemon = DaemonProcess(path)
        [aside] = tmp_path.glob("nspvend.db.bad-*")
        assert aside.read_bytes() == damaged  # kept as it was
        ask(tmp_path / "sim.sock", {"op": "load", "slot": 3, "count": 10})
        ask(tmp_path / "sim.sock", {"op": "press", "button": 2})
        wait_until(lambda: dropped(tmp_path) == 1, "a pack out")
        status = ask(tmp_path / "control.sock", {"id": "s", "cmd": "status"})["result"]
        assert "storage_fault" in status["state"]["faults"]
        hub.wait_for(lambda m: any(e["type"] == "storage_fault" and "kept as" in e["detail"]
                                   for e in hub.payloads("event")))
        hub.wait_for(lambda m: "storage_fault" in hub.payloads("state")[-1]["faults"])
        assert sum(1 for line in daemon.log if "could not be used" in line) == 1
        assert not any("Traceback" in line for line in daemon.log)
        load_and_count(tmp_path, {3: 9})  # staff recount: the fault clears
        hub.wait_for(lambda m: "storage_fault" not in hub.payloads("state")[-1]["faults"])
        assert daemon.terminate() == 0
        sent = usage_totals(hub.payloads("usage"))[0]
        assert sent == {"foil": 1}  # the pack served on the new database reached the hub
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            daemon.kill()
        hub.close()
        broker.kill()


def test_a_database_with_a_damaged_page_is_kept_aside_and_what_reads_is_copied(tmp_path):
    from datetime import UTC, datetime

    from controller.ledger import Ledger, open_ledger

    path = tmp_path / "nspvend.db"
    old = Ledger(path, "m")
    with old.transaction():
        for _ in range(400):  # enough events for the table to span many pages
            old.add_event(Event("refilled", 1, "foil", "x" * 200), datetime(2026, 12, 1, tzinfo=UTC))
        old.enqueue("usage", "b1", {"schema": 1, "id": "b1"})
    old.truncate_wal()
    old.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 10:page * 10 + 100] = b"\xde\xad" * 50  # a page of the events table, broken
    path.write_bytes(bytes(data))
    ledger, note = open_ledger(str(path), "m", datetime(2026, 12, 1, 3, tzinfo=UTC))
    assert note is not None and "could not be used" in note
    assert "Page" in note or "malformed" in note or "corrupt" in note  # quick_check's words
    assert (tmp_path / "nspvend.db.bad-20261201T030000Z").exists()
    # the broken page was the events table's: the outbox, counts not yet sent, still reads
    assert "outbox 401" in note and "usage" in [kind for _, kind, _ in ledger.outbox(1000)]
    ledger.close()

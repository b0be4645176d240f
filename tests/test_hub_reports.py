"""The hub's store, reports and alert conditions, in process, on a real SQLite file and on a
real PostgreSQL server (tests/postgres.py): the same tests for both."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.clock import FakeClock, iso
from controller.messages import EventMessage, StateMessage, StockMessage, UsageMessage
from hub import reports
from hub.alerts import conditions_of
from hub.rank import URGENCY
from hub.store import SCHEMA_VERSION, PgStore, SqliteStore
from simulator import fleet
from tests.machines import known

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request, tmp_path):
    """Makes empty stores of one kind (each call a new file or database); closes them after."""
    made = []

    def make():
        if request.param == "sqlite":
            store = SqliteStore(tmp_path / f"hub-{len(made)}.db")
        else:
            store = PgStore(request.getfixturevalue("postgres_server").database())
        made.append(store)
        return store

    yield make
    for store in made:
        try:
            store.close()
        except Exception:
            pass


def usage(bucket: str, start: str, end: str, syringes: int, unconfirmed: int = 0) -> UsageMessage:
    return UsageMessage(id=bucket, start=start, end=end, counts={"syringe-1ml": syringes, "foil": 0},
                        unconfirmed={"syringe-1ml": unconfirmed, "foil": 0}, clock_synced=True)


def test_a_bucket_heard_twice_is_kept_once(new_store):
    store = new_store()
    with store.transaction():
        store.fleet.heard("m1", NOW)
        assert store.usage.record_usage("m1", usage("b1", "2026-11-24T01:00:00Z",
                                              "2026-11-24T02:00:00Z", 3), NOW)
        assert not store.usage.record_usage("m1", usage("b1", "2026-11-24T01:00:00Z",
                                                  "2026-11-24T02:00:00Z", 3), NOW)
    assert store.usage.usage_totals("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z") == [
        ("m1", "foil", 0, 0, 1), ("m1", "syringe-1ml", 3, 0, 1)]
    assert store.usage.last_packs() == {"m1": "2026-11-24T02:00:00Z"}


def test_periods_by_day_week_month_and_financial_year():
    today = date(2026, 11, 25)
    assert [p.label for p in reports.periods("day", today, 2)] == ["24 Nov", "25 Nov"]
    assert reports.periods("week", today, 1)[0].start == datetime(2026, 11, 23, tzinfo=UTC)
    assert reports.periods("week", today, 1)[0].label == "w/c 23 Nov"
    assert [p.label for p in reports.periods("month", today, 3)] == ["Sep 2026", "Oct 2026",
                                                                     "Nov 2026"]
    years = reports.periods("year", today, 2, (4, 1))
    assert [p.label for p in years] == ["2025/26", "2026/27"]
    assert years[1].start == datetime(2026, 4, 1, tzinfo=UTC)
    assert years[1].end == datetime(2027, 4, 1, tzinfo=UTC)
    assert reports.periods("year", date(2026, 3, 31), 1, (4, 1))[0].label == "2025/26"


def test_report_days_are_the_hub_s_local_days_in_summer_too(new_store):
    """A bucket from 23:00 to 00:00 UTC on 30 June is 1 July in London (BST): the report's
    day and the CSV put it there, and the whole UTC days between come from the roll-ups."""
    london = ZoneInfo("Europe/London")
    store = new_store()
    with store.transaction():
        for start, n in (("2026-06-30T22:00:00Z", 1), ("2026-06-30T23:00:00Z", 2),
                         ("2026-07-01T12:00:00Z", 4), ("2026-07-01T23:00:00Z", 8),
                         ("2026-07-02T23:00:00Z", 16)):
            end = iso(datetime.fromisoformat(start) + timedelta(hours=1))
            store.usage.record_usage("m1", usage(start, start, end, n), NOW)
    days = reports.fill(store, reports.periods("day", date(2026, 7, 2), 3, tz=london), now=NOW)
    assert [d.label for d in days] == ["30 Jun", "1 Jul", "2 Jul"]
    assert days[1].start == datetime(2026, 6, 30, 23, tzinfo=UTC)
    assert [d.total() for d in days] == [1, 2 + 4, 8]
    assert days[1].covered == {"m1": 2 / 24}
    text = reports.usage_csv(store, date(2026, 7, 1), date(2026, 7, 3), london)
    assert "m1,syringe-1ml,14,0,0.062,3,machine:m1" in text.splitlines()  # 2 + 4 + 8, 3 of 48 hours
    text = reports.usage_csv(store, date(2026, 7, 1), date(2026, 7, 3))  # UTC days
    assert "m1,syringe-1ml,28,0,0.062,3,machine:m1" in text.splitlines()  # 4 + 8 + 16


def test_two_hour_buckets_cover_a_whole_local_day_in_summer(new_store):
    """Buckets from 22:00 to 00:00 UTC: 23:00 BST, a local day's start, falls inside one."""
    store = new_store()
    with store.transaction():
        for i in range(36):
            start = datetime(2026, 6, 30, tzinfo=UTC) + timedelta(hours=2 * i)
            store.usage.record_usage("m1", usage(f"b{i}", iso(start), iso(start + timedelta(hours=2)),
                                           1), NOW)
    london = ZoneInfo("Europe/London")
    [day] = reports.fill(store, reports.periods("day", date(2026, 7, 1), 1, tz=london), now=NOW)
    assert day.covered == {"m1": 1.0}
    assert day.total() == 12  # the twelve that start in it (01:00 .. 23:00 BST)


def test_counts_stay_apart_and_coverage_says_how_much_was_heard(new_store):
    store = new_store()
    with store.transaction():
        store.fleet.heard("m1", NOW)
        for hour in range(12):  # half of the 24th heard, and nothing of the 23rd
            start = datetime(2026, 11, 24, hour, tzinfo=UTC)
            store.usage.record_usage("m1", usage(f"b{hour}", f"{start:%Y-%m-%dT%H:%M:%SZ}",
                                           f"{start + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
                                           2, unconfirmed=1 if hour == 3 else 0), NOW)
    days = reports.fill(store, reports.periods("day", date(2026, 11, 24), 2), now=NOW)
    assert days[0].covered == {} and days[0].total() == 0
    assert days[1].covered == {"m1": 0.5}
    assert (days[1].total(), days[1].total(unconfirmed=True)) == (24, 1)
    text = reports.usage_csv(store, date(2026, 11, 24), date(2026, 11, 25))
    assert text.splitlines() == [
        "machine,product,confirmed,unconfirmed,coverage,buckets,channel",
        "m1,foil,0,0,0.500,12,machine:m1", "m1,syringe-1ml,24,1,0.500,12,machine:m1"]
    chart = reports.bar_chart(days, "by day")
    assert chart.startswith('<figure class="chart">')
    assert "<span class=\"chart-label\">24 Nov</span>" in chart and "24 + 1 unconfirmed" in chart


def machine(new_store, state: dict | None = None, stock: dict | None = None,
            availability: str = "online", heard: datetime = NOW):
    store = new_store()
    with store.transaction():
        store.fleet.heard("m1", heard)
        store.fleet.record_availability("m1", availability, heard)
        if state:
            store.fleet.record_state("m1", StateMessage.read({
                "schema": 1, "mode": "in_service", "door": "closed", "sharps_bin": "ok",
                "temperature_c": None, "faults": [], "version": "t", "uptime_s": 1,
                "clock_synced": True, "ts": "2026-11-25T12:00:00Z", **state}), heard)
        if stock:
            store.fleet.record_stock("m1", StockMessage.read(stock), heard)
    return store.fleet.machine("m1")


def test_alert_conditions_come_from_what_was_heard(new_store):
    stock = {"schema": 1, "ts": "2026-11-25T12:00:00Z", "slots": [],
             "products": {"foil": {"count": 0, "status": "empty"},
                          "citric": {"count": 2, "status": "low"},
                          "water": {"count": 9, "status": "ok"}}}
    m = machine(new_store, state={"faults": ["slot 3: jam", "storage_fault"], "door": "open",
                                 "sharps_bin": "full"}, stock=stock)
    kinds = {(kind, subject) for _, kind, subject, _ in conditions_of(m, NOW, 600)}
    assert kinds == {("jam", "slot 3"), ("storage_fault", ""), ("door_open", ""),
                     ("sharps_bin_full", ""), ("empty", "foil"), ("low_stock", "citric")}


def test_offline_is_availability_offline_or_silence_for_offline_after_s(new_store):
    quiet = machine(new_store, heard=NOW - timedelta(seconds=601))
    assert [k for _, k, _, _ in conditions_of(quiet, NOW, 600)] == ["offline"]
    just_gone = machine(new_store, availability="offline", heard=NOW - timedelta(seconds=30))
    assert conditions_of(just_gone, NOW, 600) == []
    assert [k for _, k, _, _ in conditions_of(just_gone, NOW + timedelta(seconds=600), 600)] == [
        "offline"]


def hour(n: int) -> tuple[str, str]:
    start = datetime(2026, 11, 24, tzinfo=UTC) + timedelta(hours=n)
    return f"{start:%Y-%m-%dT%H:%M:%SZ}", f"{start + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"


def silence(event_id: str, ts: str) -> EventMessage:
    return EventMessage.read({"schema": 1, "id": event_id, "ts": ts, "type": "silence",
                              "slot": None, "product": None, "detail": "no pack for 12 h"})


def test_silence_stays_until_a_pack_comes_after_it(new_store):
    store = new_store()
    with store.transaction():
        store.fleet.heard("m1", NOW)
        store.usage.record_usage("m1", usage("b1", *hour(1), 2), NOW)  # a pack before the silence
        store.fleet.record_event("m1", silence("e1", "2026-11-24T14:00:00Z"), NOW)
    assert store.fleet.machine("m1").silence == "no pack for 12 h"
    assert ("m1", "silence", "", "No pack for 12 h") in conditions_of(store.fleet.machine("m1"), NOW, 600)
    with store.transaction():  # a bucket heard late, from before the silence: still silent
        store.usage.record_usage("m1", usage("b2", *hour(2), 1), NOW)
    assert store.fleet.machine("m1").silence is not None
    with store.transaction():
        store.usage.record_usage("m1", usage("b3", *hour(15), 0), NOW)  # nothing dispensed
    assert store.fleet.machine("m1").silence is not None
    with store.transaction():
        store.usage.record_usage("m1", usage("b4", *hour(16), 1), NOW)
    assert store.fleet.machine("m1").silence is None
    with store.transaction():  # a silence event older than the last pack, heard late
        store.fleet.record_event("m1", silence("e0", "2026-11-24T10:00:00Z"), NOW)
    assert store.fleet.machine("m1").silence is None


def test_old_events_are_forgotten_and_usage_is_kept(new_store):
    store = new_store()
    with store.transaction():
        store.fleet.heard("m1", NOW)
        store.usage.record_usage("m1", usage("b1", *hour(1), 2), NOW - timedelta(days=500))
        for i, days in enumerate((500, 401, 399, 1)):
            store.fleet.record_event("m1", EventMessage.read({
                "schema": 1, "id": f"e{i}", "ts": "2025-01-01T00:00:00Z", "type": "jam",
                "slot": 1, "product": "foil", "detail": None}), NOW - timedelta(days=days))
    assert store.forget_before(NOW - timedelta(days=400)) == 2
    assert sorted(e["id"] for e in store.fleet.events("m1")) == ["e2", "e3"]
    assert store.usage.usage_totals("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z")[1][2] == 2


def test_raising_a_raised_alert_again_changes_nothing(new_store):
    store = new_store()
    with store.transaction():
        store.alerts.raise_alert("m1", "jam", "slot 3", "jammed", NOW)
        assert store.alerts.set_told("m1", "jam", "slot 3", [0], "[]")
        assert not store.alerts.set_told("m1", "jam", "slot 3", [0], "[]")  # told by another first
        store.alerts.raise_alert("m1", "jam", "slot 3", "jammed", NOW + timedelta(minutes=5))
    assert store.alerts.raised_alerts()[("m1", "jam", "slot 3")]["told"] == "[0]"
    with store.transaction():
        store.alerts.clear_alert("m1", "jam", "slot 3", NOW + timedelta(minutes=6))
        store.alerts.raise_alert("m1", "jam", "slot 3", "jammed again", NOW + timedelta(minutes=7))
    assert store.alerts.raised_alerts()[("m1", "jam", "slot 3")] == {
        "raised": "2026-11-25T12:07:00Z", "detail": "jammed again", "told": "[]"}


def test_the_alerts_raised_are_read_for_the_machines_asked_about(new_store):
    """What the alerts read after each batch: the raised alerts of that batch's machines
    alone (not every one raised in a fleet of thousands), cleared ones left out; and at
    each sweep, which machines with one raised were heard since the last."""
    store = new_store()
    with store.transaction():
        for m in ("m1", "m2", "m3"):
            store.alerts.raise_alert(m, "door_open", "", "Door open", NOW)
        store.alerts.raise_alert("m1", "jam", "slot 1", "Slot 1 jammed", NOW)
        store.alerts.clear_alert("m3", "door_open", "", NOW + timedelta(minutes=1))
    every = store.alerts.raised_alerts()
    assert sorted(every) == [("m1", "door_open", ""), ("m1", "jam", "slot 1"),
                             ("m2", "door_open", "")]
    assert store.alerts.raised_count() == 3  # /metrics' nspvend_hub_alerts_raised
    assert store.alerts.raised_alerts({"m1", "m3", "m9"}) == {
        k: v for k, v in every.items() if k[0] == "m1"}
    assert store.alerts.raised_alerts({"m2"}) == {("m2", "door_open", ""): every[
        ("m2", "door_open", "")]}
    assert store.alerts.raised_alerts(set()) == {}
    # and which machines with an alert raised were heard lately (a sweep's share)
    with store.transaction():
        store.fleet.heard("m1", NOW - timedelta(minutes=10))
        store.fleet.heard("m2", NOW)
        store.fleet.heard("m3", NOW)
    assert store.alerts.raised_machines() == {"m1", "m2"}
    assert store.alerts.raised_machines("2026-11-25T11:55:00Z") == {"m2"}
    assert store.alerts.raised_machines("2026-11-25T11:50:00Z") == {"m1", "m2"}


def test_two_writers_storing_the_same_buckets_at_once_keep_each_once(new_store):
    import threading

    first = new_store()
    url_or_path = getattr(first.db, "url", None) or first.db.path
    second = PgStore(url_or_path) if first.kind == "postgresql" else SqliteStore(url_or_path)
    buckets = [usage(f"b{n}", *hour(n), 1) for n in range(60)]
    go = threading.Barrier(2)

    def write(store, order):
        go.wait()
        for n in order:  # small transactions, as a hub's batches
            with store.transaction():
                store.fleet.heard("m1", NOW)
                store.usage.record_usage("m1", buckets[n], NOW)

    threads = [threading.Thread(target=write, args=(first, range(60))),
               threading.Thread(target=write, args=(second, reversed(range(60))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    second.close()
    totals = first.usage.usage_totals("2026-11-24T00:00:00Z", "2026-11-28T00:00:00Z")
    assert [(product, confirmed, count) for _, product, confirmed, _, count in totals] == [
        ("foil", 0, 60), ("syringe-1ml", 60, 60)]


def test_a_store_from_a_newer_hub_is_refused(new_store):
    from hub.store import SCHEMA_VERSION, StoreError

    store = new_store()
    if store.kind == "sqlite":
        store.db.x(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StoreError, match="newer nspvend hub"):
            SqliteStore(store.db.path)
    else:
        store.db.x("UPDATE nspvend_schema SET version = ?", (SCHEMA_VERSION + 1,))
        with pytest.raises(StoreError, match="newer nspvend hub"):
            PgStore(store.db.url)


def test_a_store_from_the_hub_before_is_upgraded(new_store):
    """Schema 3 adds the indexes the hourly clearing out needs, to a store of schema 2;
    schema 4 the alerts' log, with the alerts raised at the time; schema 5 enrolment, every
    machine heard before it counted as enrolled; schema 6 people's tallies; schema 7 packs
    taken out past their date; schema 8 monthly roll-ups, filled from the daily ones; 9 and
    10 the fleet's roll-ups and the board's summary; 11 the products' names from the stock
    kept."""
    store = new_store()
    with store.transaction():
        store.fleet.heard("m1", NOW)  # a machine heard before enrolment existed
        store.usage.record_usage("m1", usage("before", "2026-10-03T10:00:00Z", "2026-10-03T11:00:00Z",
                                       5, 1), NOW)  # its month's roll-up is made from the days
        store.alerts.raise_alert("m1", "jam", "slot 1", "Slot 1 jammed", NOW)
        store.alerts.raise_alert("m1", "door_open", "", "Door open", NOW)
        store.alerts.clear_alert("m1", "door_open", "", NOW)
        store.fleet.record_state("m1", fleet.state(NOW, door="open"), NOW)
        named = fleet.stock(NOW, count=2)
        named = dataclasses.replace(named, products={**named.products, "foil": dataclasses.replace(
            named.products["foil"], name="Foil")})
        store.fleet.record_stock("m1", named, NOW)
        # and names the pages do not take: nothing, a control character, a lone surrogate
        # (which neither database would keep as text)
        odd = dataclasses.replace(named, products={
            pid: dataclasses.replace(p, name=name) for (pid, p), name in zip(
                named.products.items(), ("", "Foil (odd)\n", "Cit\x00ric", "\ud800"),
                strict=True)})
        store.fleet.heard("m2", NOW)
        store.fleet.record_stock("m2", odd, NOW)
    assert store.fleet.product_names() == {"foil": "Foil"}
    for table in ("fleet_daily", "fleet_monthly", "fleet_daily_cover", "fleet_monthly_cover",
                  "products"):
        store.db.x(f"DROP TABLE {table}")
    for column in ("state_rank", "look", "stock_rank", "use_by", "version", "firmware",
                   "board_outdated"):
        store.db.x(f"ALTER TABLE machines DROP COLUMN {column}")
    store.db.x("DROP INDEX events_by_received")
    for table in ("alert_log", "tallies", "tally_counts", "expired_removals", "monthly_counts",
                  "monthly_cover"):
        store.db.x(f"DROP TABLE {table}")
    if store.kind == "sqlite":
        store.db.x("PRAGMA user_version = 2")
        again = SqliteStore(store.db.path)
        assert again.db.x("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 11
        indexes = sqlite_utils.Database(again.db.conn)["events"].indexes
        assert "events_by_received" in {i.name for i in indexes}
    else:
        store.db.x("UPDATE nspvend_schema SET version = 2")
        again = PgStore(store.db.url)
        assert again.db.x("SELECT version FROM nspvend_schema").fetchone()[0] == SCHEMA_VERSION
        assert again.db.x("SELECT count(*) FROM pg_indexes WHERE indexname = 'events_by_received'"
                        ).fetchone()[0] == 1
        # room for the next version of a row updated batch after batch (schema 11)
        assert again.db.x("SELECT reloptions FROM pg_class WHERE relname = 'daily_counts'"
                          ).fetchone()[0] == ["fillfactor=70"]
    assert [(e[0], e[1]) for e in again.fleet.enrolled()] == [("m1", "m1"), ("m2", "m2")]
    [raised] = again.alerts.alert_log(NOW)
    assert (raised["type"], raised["subject"], raised["cleared"]) == ("jam", "slot 1", None)
    with again.transaction():
        assert again.alerts.acknowledge(raised["id"], "sam", NOW)
        assert not again.alerts.acknowledge(raised["id"], "kim", NOW)  # someone is on it already
    assert again.alerts.acknowledged() == {("m1", "jam", "slot 1"): ("sam", iso(NOW))}
    assert [tuple(r) for r in again.db.x("SELECT machine, month, product, confirmed, unconfirmed"
                                       " FROM monthly_counts WHERE product = 'syringe-1ml'"
                                       ).fetchall()] == [("m1", "2026-10", "syringe-1ml", 5, 1)]
    assert again.usage.period_counts("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z") == [
        ("m1", "foil", 0, 0), ("m1", "syringe-1ml", 5, 1)]
    # the fleet's roll-ups made from the machines', the board's summary from the words kept
    assert again.usage.fleet_counts("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z") == [
        ("foil", 0, 0), ("syringe-1ml", 5, 1)]
    assert again.usage.fleet_counts("2026-10-03T00:00:00Z", "2026-10-04T00:00:00Z") == [
        ("foil", 0, 0), ("syringe-1ml", 5, 1)]
    assert again.fleet.product_names() == {"foil": "Foil"}
    assert again.fleet.ranks()["m1"][3:] == (URGENCY.index("door"), "door_open",
                                            URGENCY.index("low"), None, "fleet", None, 0)
    from hub.store import Tally

    assert again.tallies.record(Tally("tally-0001", "van", "2026-11-25T10:00:00Z",
                                    "2026-11-25T11:00:00Z", {"foil": 2}), "sam") == "new"
    assert again.tallies.totals("2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z") == (
        [("van", "foil", 2)], {"van": 1})
    again.close()


def test_a_backup_taken_while_the_hub_writes_gives_the_same_report(tmp_path):
    store = SqliteStore(tmp_path / "hub.db")
    with store.transaction():
        store.fleet.heard("m1", NOW)
        for n in range(48):
            store.usage.record_usage("m1", usage(f"b{n}", *hour(n), n % 3), NOW)
    store.backup(str(tmp_path / "copy.db"))
    with store.transaction():  # after the copy: not in it
        store.usage.record_usage("m1", usage("late", *hour(30), 9), NOW)
    copy = SqliteStore(tmp_path / "copy.db")
    want = reports.usage_csv(store, date(2026, 11, 24), date(2026, 11, 26))
    got = reports.usage_csv(copy, date(2026, 11, 24), date(2026, 11, 26))
    assert got != want and "m1,syringe-1ml,48,0" in got and "m1,syringe-1ml,57,0" in want
    with copy.transaction():
        copy.usage.record_usage("m1", usage("late", *hour(30), 9), NOW)
    assert reports.usage_csv(copy, date(2026, 11, 24), date(2026, 11, 26)) == want
    copy.close()
    store.close()


def _listener(store):
    from hub.config import parse_hub_config
    from hub.listener import Listener

    return Listener(parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "machines": known("m1")}),
                    store)


def _usage_item(bucket: str, hour: int, syringes: int, mid: int) -> tuple[str, bytes, int, int]:
    u = usage(bucket, f"2026-11-24T{hour:02d}:00:00Z", f"2026-11-24T{hour + 1:02d}:00:00Z",
              syringes)
    return ("nspvend/m1/usage", u.encode().encode(), mid, 1)


def test_a_message_the_store_refuses_is_left_out_and_the_rest_of_its_batch_stored(new_store):
    """One message the contract's checks let through but the database will not keep must not
    hold up the others (retried for ever, the broker's queue would overflow)."""
    store = new_store()
    record = store.usage.record_usages

    def refusing(items, at, *packs):
        if any(message.id == "refused" for _, message in items):
            raise ValueError("the database will not keep this")
        return record(items, at, *packs)

    store.usage.record_usages = refusing
    listener = _listener(store)
    batch = [_usage_item("b1", 1, 3, 1), _usage_item("refused", 2, 100, 2),
             _usage_item("b3", 3, 4, 3)]
    heard = listener._store_until_stored(batch)
    assert [h.message.id for h in heard if h.leaf == "usage"] == ["b1", "b3"]
    assert store.usage.usage_totals("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z") == [
        ("m1", "foil", 0, 0, 2), ("m1", "syringe-1ml", 7, 0, 2)]
    assert listener.skipped == 1


def test_a_batch_is_held_while_the_database_is_busy_and_stored_after(new_store):
    """The database away or locked is not the message's fault: the batch waits (not
    acknowledged) and is stored once the database answers."""
    import threading

    store = new_store()
    listener = _listener(store)
    if store.kind == "sqlite":
        import sqlite3

        store.db.x("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(store.db.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
    else:
        import psycopg

        store.db.conn.execute("SET lock_timeout = '50ms'")
        other = psycopg.connect(store.db.url)
        other.execute("LOCK TABLE machines IN ACCESS EXCLUSIVE MODE")
    result: list = []
    worker = threading.Thread(target=lambda: result.append(
        listener._store_until_stored([_usage_item("b1", 1, 3, 1)])))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and listener.stored == 0
    other.rollback() if store.kind == "postgresql" else other.execute("ROLLBACK")
    worker.join(10)
    assert [h.message.id for h in result[0] if h.leaf == "usage"] == ["b1"]
    assert listener.skipped == 0
    other.close()


def test_the_database_away_while_a_batch_is_read_holds_the_batch_too(tmp_path):
    """Reading a batch asks the database too (the machines enrolled, every 2 s): the
    database away then is waited out like a store refused for being busy, and the hub's
    writer goes on, not stopped for good."""
    import sqlite3
    import threading

    store = SqliteStore(tmp_path / "hub.db")
    enrolled, failed = store.fleet.enrolled, []

    def away():
        if not failed:
            failed.append(1)
            raise sqlite3.OperationalError("database is locked")
        return enrolled()

    stored = threading.Event()
    listener = _listener(store)
    store.fleet.enrolled = away
    listener.on_heard = lambda heard: stored.set()
    listener.directory._at = -1e9  # the list of machines is due to be read again
    topic, payload, mid, _ = _usage_item("b1", 1, 3, 1)
    listener.inbox.put((topic, payload, mid, 0))
    listener._writer.start()
    try:
        assert stored.wait(15) and failed
        assert listener.stored == 1 and listener.acked == 1 and listener.skipped == 0
    finally:
        listener._stop.set()
        listener._writer.join(10)
    store.close()


def test_the_next_batch_is_read_while_one_is_stored_and_each_message_kept_once(
        tmp_path, monkeypatch, caplog):
    """While a batch is stored (mostly waiting on the database), the messages after it are
    read (the contract's checks: most of a batch's work in Python), up to a batch of them
    and no more; each is then stored, or skipped as bad and said once, in order."""
    import threading

    import hub.listener as listener_module
    from controller.messages import BadMessage

    monkeypatch.setattr(listener_module, "BATCH", 3)
    store = SqliteStore(tmp_path / "hub.db")
    listener = _listener(store)
    record, storing, go, done = (store.usage.record_usages, threading.Event(),
                                 threading.Event(), threading.Event())

    def held(items, at, *packs):
        storing.set()
        assert go.wait(10)
        return record(items, at, *packs)

    store.usage.record_usages = held
    batches: list[list[str]] = []

    def heard(heard):
        batches.append([h.message.id for h in heard])
        if "b5" in batches[-1]:
            done.set()

    listener.on_heard = heard
    items = [_usage_item(b, hour, 1, mid) for mid, (b, hour) in enumerate(
        [("b1", 1), ("b2", 2), ("bad", 3), ("b3", 4), ("b4", 5), ("b5", 6)])]
    items[2] = ("nspvend/m1/usage", b'{"schema": 1, "id": "bad"}', 2, 1)
    listener.inbox.put(items[0][:3] + (0,))
    listener._writer.start()
    try:
        assert storing.wait(10)  # the first batch, b1, is being stored
        for topic, payload, mid, _ in items[1:]:
            listener.inbox.put((topic, payload, mid, 0))
        with listener._ahead_changed:  # read while b1 is still being stored
            assert listener._ahead_changed.wait_for(lambda: len(listener._ahead) == 3, 10)
            ahead = list(listener._ahead)
        assert listener.stored == 0 and listener.inbox.qsize() == 2  # a batch ahead, no more
        assert [type(a[4]).__name__ for a in ahead] == ["UsageMessage", "BadMessage",
                                                        "UsageMessage"]
        assert isinstance(ahead[1][4], BadMessage)
        go.set()
        assert done.wait(10)
    finally:
        listener._stop.set()
        listener._writer.join(10)
    assert batches == [["b1"], ["b2", "b3"], ["b4", "b5"]]
    assert listener.acked == 6 and listener.stored == 5 and listener.skipped == 1
    assert [r.getMessage()[:34] for r in caplog.records if "skipped" in r.getMessage()] == [
        "skipped a usage message from m1 th"]
    assert store.usage.usage_totals("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z") == [
        ("m1", "foil", 0, 0, 5), ("m1", "syringe-1ml", 5, 0, 5)]
    store.close()


def test_a_product_s_name_written_by_another_hub_process_is_read_again_within_a_minute(
        tmp_path):
    """Two hub processes on one store: a name the other wrote is noticed once this one's
    reading of the names is a minute old, so the machine's latest name stands."""
    from hub.store.fleet import NAMES_READ_S

    def named(name):
        stock = fleet.stock(NOW)
        return dataclasses.replace(stock, products={**stock.products, "foil": dataclasses.replace(
            stock.products["foil"], name=name)})

    one, other = SqliteStore(tmp_path / "hub.db"), SqliteStore(tmp_path / "hub.db")
    with one.transaction():
        one.fleet.heard("m1", NOW)
        one.fleet.record_stock("m1", named("Foil"), NOW)
    with one.transaction():
        one.fleet.record_stock("m1", named("Foil"), NOW)  # read back: this process knows it
    with other.transaction():
        other.fleet.record_stock("m1", named("Foil (5)"), NOW)
    with one.transaction():  # the machine's name again: this process read it so just now
        one.fleet.record_stock("m1", named("Foil"), NOW)
    assert one.fleet.product_names() == {"foil": "Foil (5)"}
    one.fleet._names_read -= NAMES_READ_S  # a minute on
    with one.transaction():
        one.fleet.record_stock("m1", named("Foil"), NOW)
    assert one.fleet.product_names() == {"foil": "Foil"}
    one.close()
    other.close()


def _three_machines(store):
    """A listener for m1, m2 and m3, its clock at NOW."""
    from hub.config import parse_hub_config
    from hub.listener import Listener

    return Listener(parse_hub_config({"mqtt": {"host": "127.0.0.1"},
                                      "machines": known("m1", "m2", "m3")}), store,
                    clock=FakeClock(NOW))


def said(machine: str, leaf: str, message) -> tuple[str, bytes, int, int]:
    """``message`` from ``machine`` as the listener takes it off the broker."""
    return (f"nspvend/{machine}/{leaf}", message.encode().encode(), 0, 1)


def test_a_batch_of_latest_words_keeps_each_machine_s_last_state_and_stock(new_store):
    """The states and stocks of a batch are stored together: each machine's last in the batch
    stands (with the board's summary of it), whatever came between, and the names its
    stock gives its products are the pages' names."""
    store = new_store()
    listener = _three_machines(store)

    def named(count, name):
        stock = fleet.stock(NOW, count=count)
        return dataclasses.replace(stock, products={**stock.products, "foil": dataclasses.replace(
            stock.products["foil"], name=name)})

    early, late = NOW - timedelta(minutes=10), NOW - timedelta(minutes=5)
    batch = [said("m1", "state", fleet.state(early, door="open")),
             said("m2", "state", fleet.state(early)),
             said("m1", "stock", named(0, "Foil")),
             said("m1", "state", fleet.state(late)),  # m1's last state: door shut
             said("m2", "state", fleet.state(late, faults=["slot 2: jam"])),
             said("m1", "stock", named(9, "Foil (pack of 5)")),
             ("nspvend/m3/availability", b"online", 0, 1)]
    heard = listener.store_batch(batch)
    assert [(h.machine, h.leaf) for h in heard] == [
        ("m1", "state"), ("m2", "state"), ("m1", "stock"), ("m1", "state"), ("m2", "state"),
        ("m1", "stock"), ("m3", "availability")]
    m1, m2 = store.fleet.machine("m1"), store.fleet.machine("m2")
    assert (m1.state.door, m1.state_at, m1.stock.products["foil"].count, m1.stock_at) == (
        "closed", iso(late), 9, iso(NOW))
    assert (m2.state.faults, m2.state_at, m2.stock) == (("slot 2: jam",), iso(late), None)
    ranks = store.fleet.ranks()
    assert ranks["m1"][3:7] == (URGENCY.index("ok"), "in_service", URGENCY.index("ok"), None)
    assert ranks["m2"][3] == URGENCY.index("fault")
    assert store.fleet.machine("m3").availability == "online"
    assert store.fleet.product_names() == {"foil": "Foil (pack of 5)"}
    # a name changed on the machine is the pages' name from its next stock
    listener.store_batch([said("m1", "stock", named(8, "Foil"))])
    assert store.fleet.product_names() == {"foil": "Foil"}


def test_a_batch_writes_each_machine_s_row_once_with_its_latest_words(new_store):
    """Heard, two states, a stock and a bucket with a pack from each machine in one batch:
    one statement writes each machine's row with its latest state and stock (on
    PostgreSQL each write of a row is a new version of it, which the board reads past
    until it is cleared away), one more the pack, and the row has all of it; the pack
    ends a silence told before it (one told after it stands)."""
    store = new_store()
    listener = _three_machines(store)

    hour = NOW - timedelta(hours=2)
    listener.store_batch([  # silences: m1's before its next pack, m2's after it
        said("m1", "event", fleet.event(hour - timedelta(hours=1), "silence", detail="m1")),
        said("m2", "event", fleet.event(hour + timedelta(hours=2), "silence", detail="m2"))])
    writes: list[str] = []
    x = store.db.x

    def watched(sql, params=()):
        if sql.startswith(("INSERT INTO machines", "UPDATE machines")):
            writes.append(sql.split()[0])
        return x(sql, params)

    store.db.x = watched
    batch = []
    for m in ("m3", "m1", "m2"):
        batch += [said(m, "state", fleet.state(hour)), said(m, "stock", fleet.stock(hour)),
                  said(m, "usage", fleet.bucket(hour, {"foil": 2})),
                  said(m, "state", fleet.state(hour, door="open"))]
    listener.store_batch(batch)
    store.db.x = x
    assert writes == ["INSERT", "UPDATE"]  # heard with its words; the latest pack
    end = iso(hour + timedelta(hours=1))
    for m in ("m1", "m2", "m3"):
        machine = store.fleet.machine(m)
        assert (machine.state.door, machine.stock is not None, machine.last_pack,
                machine.last_heard) == ("open", True, end, iso(NOW))
    assert store.fleet.machine("m1").silence is None
    assert store.fleet.machine("m2").silence == "m2"
    assert store.usage.usage_totals(iso(hour), end)[:2] == [
        ("m1", "citric", 0, 0, 1), ("m1", "foil", 2, 0, 1)]


def test_a_state_or_stock_told_before_the_one_kept_is_not_kept(new_store):
    """Several hub processes share the machines' words, in no order between them: a state or
    stock told before the one kept (stored late by another process, or heard again) is not
    kept, in a batch or in a later one, through every way of writing them; of two told in
    the same second, the one stored last stands. The machine is heard all the same."""
    store = new_store()
    listener = _three_machines(store)
    early, late = NOW - timedelta(minutes=10), NOW - timedelta(minutes=5)
    listener.store_batch([said("m1", "state", fleet.state(late, door="open")),
                          said("m1", "stock", fleet.stock(late, count=9)),
                          said("m2", "state", fleet.state(late, door="open")),
                          said("m2", "state", fleet.state(early))])  # out of order in a batch
    listener.clock = FakeClock(NOW + timedelta(minutes=1))
    listener.store_batch([said("m1", "state", fleet.state(early)),
                          said("m1", "stock", fleet.stock(early, count=1)),
                          said("m3", "state", fleet.state(late, door="open"))])
    with store.transaction():
        store.fleet.record_state("m1", fleet.state(early), early)
        store.fleet.record_stock("m1", fleet.stock(early, count=2), early)
    listener.store_batch([said("m3", "state", fleet.state(late))])  # the same second, later
    m1, m2, m3 = (store.fleet.machine(m) for m in ("m1", "m2", "m3"))
    assert (m1.state.door, m1.state_at, m1.stock.products["foil"].count, m1.stock_at) == (
        "open", iso(late), 9, iso(late))
    assert m1.last_heard == iso(NOW + timedelta(minutes=1))
    assert (m2.state.door, m2.state_at) == ("open", iso(late))
    assert (m3.state.door, m3.state_at) == ("closed", iso(late))
    # the board's summary is that of the state kept
    assert store.fleet.ranks()["m1"][4] == "door_open"
    # and a later one is kept, however it comes
    with store.transaction():
        store.fleet.record_state("m1", fleet.state(NOW), NOW)
        store.fleet.record_stock("m1", fleet.stock(NOW, count=3), NOW)
    m1 = store.fleet.machine("m1")
    assert (m1.state.door, m1.stock.products["foil"].count) == ("closed", 3)


def test_the_machines_online_are_those_whose_last_word_was_online(new_store):
    store = new_store()
    with store.transaction():
        for machine, word in (("m2", "online"), ("m1", "online"), ("m3", "offline")):
            store.fleet.heard(machine, NOW)
            store.fleet.record_availability(machine, word, NOW)
        store.fleet.heard("m4", NOW)  # heard, but never said
    assert store.fleet.online() == ["m1", "m2"]


def test_what_a_bucket_close_told_is_kept_at_its_ts_not_when_it_arrived(new_store):
    """Promise 2 at the hub: an event, a state and a stock told at a bucket's close, and the
    alerts they raise, are kept at the close (their ``ts``), not 1.7 s later when they
    arrived, so nothing the hub keeps is finer than what the machine said."""
    import json

    from controller.clock import FakeClock
    from hub.alerts import Alerts
    from hub.config import parse_hub_config
    from hub.listener import Listener, told_at

    store = new_store()
    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "machines": known("m1")})
    clock = FakeClock(datetime(2026, 11, 25, 3, 0, 1, 700000, tzinfo=UTC))
    close = "2026-11-25T03:00:00Z"
    state = {"schema": 1, "mode": "in_service", "door": "closed", "sharps_bin": "ok",
             "temperature_c": None, "faults": ["slot 3: jam"], "version": "t", "uptime_s": 1,
             "clock_synced": True, "ts": close}
    stock = {"schema": 1, "ts": close, "slots": [],
             "products": {"foil": {"count": 0, "status": "empty"}}}
    jam = {"schema": 1, "id": "e1", "ts": close, "type": "jam", "slot": 3, "product": "foil",
           "detail": "nothing dropped"}
    batch = [(f"nspvend/m1/{leaf}", json.dumps(body).encode(), i, 1)
             for i, (leaf, body) in enumerate((("event", jam), ("state", state), ("stock", stock)))]
    heard = Listener(config, store, clock=clock).store_batch(batch)
    Alerts(config, store, clock).heard(heard)
    assert [tuple(r) for r in store.db.x("SELECT ts, received FROM events").fetchall()] == [
        (close, close)]
    m = store.fleet.machine("m1")
    assert (m.state_at, m.stock_at) == (close, close)
    raised = store.alerts.raised_alerts()
    assert {k[1]: v["raised"] for k, v in raised.items()} == {"jam": close, "empty": close}
    # a stamp the hub cannot believe (a clock not yet set, a backlog days old): the arrival
    now = clock.now()
    assert told_at(close, now) == datetime(2026, 11, 25, 3, tzinfo=UTC)
    assert told_at("1970-01-01T00:00:00Z", now) == now
    assert told_at("2026-11-23T02:59:59Z", now) == now
    assert told_at("2026-11-25T03:05:00Z", now) == now


def test_a_bucket_across_midnight_counts_on_its_first_day_and_covers_each_day_its_share(
        new_store):
    """A bucket's counts go to the day it starts (UTC), its time to each day it covers; a
    product only unconfirmed is kept too; a bucket cut to nothing by a stop covers nothing."""
    store = new_store()
    across = UsageMessage(id="b1", start="2026-11-24T23:30:00Z", end="2026-11-25T00:30:00Z",
                          counts={"foil": 2}, unconfirmed={"water": 1}, clock_synced=True)
    empty = UsageMessage(id="b2", start="2026-11-25T00:30:00Z", end="2026-11-25T00:30:00Z",
                         counts={"foil": 0}, unconfirmed={}, clock_synced=True)
    with store.transaction():
        store.fleet.heard("m1", NOW)
        store.usage.record_usage("m1", across, NOW)
        store.usage.record_usage("m1", empty, NOW)
    assert store.usage.usage_totals("2026-11-24T00:00:00Z", "2026-11-26T00:00:00Z") == [
        ("m1", "foil", 2, 0, 2), ("m1", "water", 0, 1, 2)]
    daily = [tuple(r) for r in store.db.x(
        "SELECT day, product, confirmed, unconfirmed FROM daily_counts ORDER BY day, product")]
    assert daily == [("2026-11-24", "foil", 2, 0), ("2026-11-24", "water", 0, 1),
                     ("2026-11-25", "foil", 0, 0)]
    cover = [tuple(r) for r in store.db.x("SELECT day, seconds, buckets FROM daily_cover"
                                        " ORDER BY day")]
    assert cover == [("2026-11-24", 1800.0, 1), ("2026-11-25", 1800.0, 1)]


def test_no_cell_of_the_usage_csv_is_a_formula_whatever_a_machine_names_its_products(new_store):
    store = new_store()
    evil = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "@SUM(1+1)",
            "-2+3", '\tx', 'a,b"c']
    with store.transaction():
        store.usage.record_usage("m1", UsageMessage(
            id="b1", start="2026-11-24T01:00:00Z", end="2026-11-24T02:00:00Z",
            counts={p: 1 for p in evil}, unconfirmed={p: 0 for p in evil},
            clock_synced=True), NOW)
    text = reports.usage_csv(store, date(2026, 11, 24), date(2026, 11, 25))
    rows = list(csv.reader(io.StringIO(text)))
    assert all(len(r) == 7 for r in rows)  # a comma or a quote in a name shifts nothing
    cells = [c for r in rows[1:] for c in r]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert sorted(r[1] for r in rows[1:]) == sorted(
        "'" + p if p[0] in "=+-@\t" else p for p in evil)


def test_a_year_of_12000_syringes_for_60_people_is_200_a_person_medium_by_who_bands(new_store):
    from hub.config import parse_hub_config

    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "reports": {
        "units": {"syringe-1ml": 10}, "people_who_inject": 60, "estimate_source": "JSNA",
        "estimate_year": 2025, "injections_per_day": 2}})
    store = new_store()
    with store.transaction():
        for k in range(1, 13):  # 100 packs of 10 a month, for a year
            start = NOW - timedelta(days=30 * k)
            store.usage.record_usage("m1", usage(f"y{k}", iso(start), iso(start + timedelta(hours=1)),
                                           100, unconfirmed=7), NOW)  # unconfirmed: not counted
    rolling = reports.coverage(store, config, NOW)[0]
    assert (rolling.label, rolling.needles, rolling.per_person_year, rolling.band) == (
        "the last 12 months", 12000, 200.0, "medium")
    assert round(rolling.per_injection, 3) == round(200 / 365 / 2, 3)
    assert [reports.who_band(n) for n in (99.9, 100, 200, 200.1)] == [
        "low", "medium", "medium", "high"]
    unconfigured = parse_hub_config({"mqtt": {"host": "127.0.0.1"}})
    assert reports.coverage(store, unconfigured, NOW) == []


def test_the_coverage_estimate_needs_its_source_and_year():
    from controller.config import ConfigError
    from hub.config import parse_hub_config

    with pytest.raises(ConfigError, match="reports.estimate_source: must be given with"):
        parse_hub_config({"mqtt": {"host": "h"}, "reports": {"people_who_inject": 60}})
    with pytest.raises(ConfigError, match="reports.units.foil: must be a whole number"):
        parse_hub_config({"mqtt": {"host": "h"}, "reports": {"units": {"foil": "ten"}}})


def test_the_whole_service_adds_up_per_channel_and_in_total(new_store):
    """A machine's buckets and staff's tallies at the counter and the van: the CSV, the report
    periods and the coverage figure count each once, split by channel, and add up."""
    from hub.config import parse_hub_config
    from hub.store import Tally

    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "reports": {
        "units": {"syringe-1ml": 10}, "people_who_inject": 60,
        "estimate_source": "JSNA", "estimate_year": 2025}})
    store = new_store()
    day = datetime(2026, 11, 24, tzinfo=UTC)
    with store.transaction():
        for k in range(3):  # 3 buckets of 20 syringe packs at the machine, 1 unconfirmed each
            start = day + timedelta(hours=k)
            store.usage.record_usage("m1", usage(f"u{k}", iso(start), iso(start + timedelta(hours=1)),
                                           20, unconfirmed=1), NOW)
    hour = day + timedelta(hours=10)

    def tally(tally_id, channel, counts, version=1, start=hour, user="sam"):
        return store.tallies.record(Tally(tally_id, channel, iso(start),
                                        iso(start + timedelta(hours=1)), counts, version), user)

    assert tally("counter-1", "counter", {"syringe-1ml": 30, "foil": 5}) == "new"
    assert tally("counter-1", "counter", {"syringe-1ml": 30, "foil": 5}) == "same"  # resent
    assert tally("counter-2", "counter", {"syringe-1ml": 10}, user="kim") == "new"
    assert tally("van-1", "van", {"syringe-1ml": 4}) == "new"
    assert tally("van-1", "van", {"syringe-1ml": 6}, version=3) == "updated"
    assert tally("van-1", "van", {"syringe-1ml": 5}, version=2) == "same"  # overtaken: no change
    assert tally("van-1", "counter", {"syringe-1ml": 99}, version=4) == "taken"

    text = reports.usage_csv(store, date(2026, 11, 24), date(2026, 11, 25))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:4] == ["machine", "product", "confirmed", "unconfirmed"]
    by_channel: dict[str, int] = {}
    for r in rows:
        by_channel[r["channel"]] = by_channel.get(r["channel"], 0) + int(r["confirmed"])
    assert by_channel == {"machine:m1": 60, "counter": 45, "van": 6}
    assert [r for r in rows if r["channel"] == "counter"] == [
        {"machine": "", "product": "foil", "confirmed": "5", "unconfirmed": "0", "coverage": "",
         "buckets": "2", "channel": "counter"},
        {"machine": "", "product": "syringe-1ml", "confirmed": "40", "unconfirmed": "0",
         "coverage": "", "buckets": "2", "channel": "counter"}]
    assert sum(int(r["unconfirmed"]) for r in rows) == 3  # the machine's, kept apart

    period = reports.fill(store, [reports.Period("24 Nov", day, day + timedelta(days=1))],
                          now=NOW)[0]
    assert (period.machine_total(), period.channel_total("counter"),
            period.channel_total("van"), period.total()) == (60, 45, 6, 111)
    assert period.total("syringe-1ml") == 60 + 40 + 6 and period.total(unconfirmed=True) == 3
    chart = reports.bar_chart([period], "Packs", ("counter", "van"))
    assert "111 (machines 60, counter 45, van 6) + 3 unconfirmed" in chart
    # needle-syringes from every channel: (60 + 40 + 6) packs of 10, foil counts none
    assert reports.coverage(store, config, NOW)[0].needles == 1060


def test_a_year_from_the_machine_the_counter_and_the_van_is_one_coverage_figure(new_store):
    from hub.config import parse_hub_config
    from hub.store import Tally

    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "reports": {
        "units": {"syringe-1ml": 10}, "people_who_inject": 60, "estimate_source": "JSNA",
        "estimate_year": 2025}})
    store = new_store()
    with store.transaction():
        for k in range(1, 13):  # 12,000 needle-syringes a year: 50 packs a month at the
            start = (NOW - timedelta(days=30 * k)).replace(minute=0)  # machine, 40 at the
            store.usage.record_usage("m1", usage(f"y{k}", iso(start),  # counter, 10 from the van
                                           iso(start + timedelta(hours=1)), 50), NOW)
    for k in range(1, 13):
        start = (NOW - timedelta(days=30 * k)).replace(minute=0)
        for channel, packs in (("counter", 40), ("van", 10)):
            store.tallies.record(Tally(f"{channel}-{k:04d}", channel, iso(start),
                                     iso(start + timedelta(hours=1)), {"syringe-1ml": packs}),
                               "sam")
    rolling = reports.coverage(store, config, NOW)[0]
    assert (rolling.needles, rolling.per_person_year, rolling.band) == (12000, 200.0, "medium")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sends=st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.integers(0, 12),
                                st.integers(0, 60), st.integers(0, 3), st.integers(0, 2)),
                      min_size=1, max_size=40),
       cuts=st.lists(st.integers(1, 40), max_size=5))
def test_buckets_stored_in_batches_count_as_if_stored_one_by_one(tmp_path_factory, sends, cuts):
    """A backlog's buckets stored a batch at a time (a few statements each, repeats inside
    a batch and across batches) leave what storing them one by one leaves."""
    folder = tmp_path_factory.mktemp("batches")
    one, many = SqliteStore(folder / "one.db"), SqliteStore(folder / "many.db")
    items = []
    for machine, n, hour_, syringes, unconfirmed in sends:
        start = datetime(2026, 11, 24, tzinfo=UTC) + timedelta(hours=hour_ % 48, minutes=30 * (
            hour_ % 2))  # some across midnight
        items.append((machine, usage(f"b{n}-{machine}", iso(start), iso(start + timedelta(hours=1)),
                                     syringes, unconfirmed)))
    with one.transaction():
        one.fleet.heard_from(["m1", "m2", "m3"], NOW)
        singly = [one.usage.record_usage(m, u, NOW) for m, u in items]
    batched: list[bool] = []
    bounds = sorted({0, len(items), *(c for c in cuts if c < len(items))})
    with many.transaction():
        many.fleet.heard_from(["m1", "m2", "m3"], NOW)
        for a, b in zip(bounds, bounds[1:], strict=False):
            batched += many.usage.record_usages(items[a:b], NOW)
    assert batched == singly
    span = ("2026-11-23T00:00:00Z", "2026-11-27T00:00:00Z")
    assert many.usage.usage_totals(*span) == one.usage.usage_totals(*span)
    assert many.usage.period_cover(*span) == one.usage.period_cover(*span)
    assert many.usage.last_packs() == one.usage.last_packs()
    # the fleet's roll-ups add up to the machines', whole days or ragged hours
    for whole in (span, ("2026-11-23T05:00:00Z", "2026-11-26T19:00:00Z")):
        by_product: dict[str, list[int]] = {}
        for _, product, confirmed, unconfirmed, _ in one.usage.usage_totals(*whole):
            by_product.setdefault(product, [0, 0])
            by_product[product][0] += confirmed
            by_product[product][1] += unconfirmed
        assert many.usage.fleet_counts(*whole) == [(p, c, u) for p, (c, u)
                                                   in sorted(by_product.items())]
        assert many.usage.fleet_cover(*whole) == pytest.approx(
            sum(seconds for _, seconds in one.usage.period_cover(*whole)))
    for table in ("daily_counts", "daily_cover", "monthly_counts", "monthly_cover",
                  "fleet_daily", "fleet_monthly", "fleet_daily_cover", "fleet_monthly_cover",
                  "bucket_counts", "machines"):
        assert sorted(many.db.x(f"SELECT * FROM {table}").fetchall()) == sorted(
            one.db.x(f"SELECT * FROM {table}").fetchall()), table
    one.close()
    many.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hours=st.lists(st.integers(0, 24 * 120), min_size=1, max_size=60, unique=True),
       a=st.integers(0, 24 * 130 * 4), b=st.integers(0, 24 * 130 * 4))
def test_months_days_and_edges_add_up_to_the_buckets_themselves(tmp_path_factory, hours, a, b):
    """Whatever the span, the monthly roll-ups for the whole months in it, the daily ones for
    the days left and the buckets at its edges count what the buckets starting in it hold."""
    store = SqliteStore(tmp_path_factory.mktemp("months") / "hub.db")
    origin = datetime(2026, 8, 20, tzinfo=UTC)
    buckets = []
    with store.transaction():
        store.fleet.heard("m1", NOW)
        for n, h in enumerate(hours):
            start = origin + timedelta(hours=h, minutes=30 * (n % 2))  # some across midnight
            buckets.append((start, n % 5 + 1))
            store.usage.record_usage("m1", usage(f"b{n}", iso(start), iso(start + timedelta(hours=1)),
                                           n % 5 + 1), NOW)
    since, until = sorted((origin + timedelta(minutes=15 * a), origin + timedelta(minutes=15 * b)))
    want = sum(n for start, n in buckets if since <= start < until)
    got = {p: c for _, p, c, _ in store.usage.period_counts(iso(since), iso(until))}
    assert got.get("syringe-1ml", 0) == want
    inside = sum(max(0.0, (min(start + timedelta(hours=1), until) - max(start, since))
                     .total_seconds()) for start, _ in buckets
                 if since - timedelta(days=1) <= start < until)
    assert abs(dict(store.usage.period_cover(iso(since), iso(until))).get("m1", 0.0) - inside) < 1e-6
    store.close()

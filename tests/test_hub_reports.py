"""The hub's store, reports and alert conditions, in process on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from controller.messages import StateMessage, StockMessage, UsageMessage
from hub import reports
from hub.alerts import conditions_of
from hub.store import SqliteStore

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def usage(bucket: str, start: str, end: str, syringes: int, unconfirmed: int = 0) -> UsageMessage:
    return UsageMessage(id=bucket, start=start, end=end, counts={"syringe-1ml": syringes, "foil": 0},
                        unconfirmed={"syringe-1ml": unconfirmed, "foil": 0}, clock_synced=True)


def test_a_bucket_heard_twice_is_kept_once(tmp_path):
    store = SqliteStore(tmp_path / "hub.db")
    with store.transaction():
        store.heard("m1", NOW)
        assert store.record_usage("m1", usage("b1", "2026-11-24T01:00:00Z",
                                              "2026-11-24T02:00:00Z", 3), NOW)
        assert not store.record_usage("m1", usage("b1", "2026-11-24T01:00:00Z",
                                                  "2026-11-24T02:00:00Z", 3), NOW)
    assert store.usage_totals("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z") == [
        ("m1", "foil", 0, 0, 1), ("m1", "syringe-1ml", 3, 0, 1)]
    assert store.last_packs() == {"m1": "2026-11-24T02:00:00Z"}


def test_periods_by_day_week_month_and_financial_year():
    today = date(2026, 11, 25)
    assert [p.label for p in reports.periods("day", today, 2)] == ["2026-11-24", "2026-11-25"]
    assert reports.periods("week", today, 1)[0].start == datetime(2026, 11, 23, tzinfo=UTC)
    assert [p.label for p in reports.periods("month", today, 3)] == ["2026-09", "2026-10",
                                                                     "2026-11"]
    years = reports.periods("year", today, 2, (4, 1))
    assert [p.label for p in years] == ["2025/26", "2026/27"]
    assert years[1].start == datetime(2026, 4, 1, tzinfo=UTC)
    assert years[1].end == datetime(2027, 4, 1, tzinfo=UTC)
    assert reports.periods("year", date(2026, 3, 31), 1, (4, 1))[0].label == "2025/26"


def test_counts_stay_apart_and_coverage_says_how_much_was_heard(tmp_path):
    store = SqliteStore(tmp_path / "hub.db")
    with store.transaction():
        store.heard("m1", NOW)
        for hour in range(12):  # half of the 24th heard, and nothing of the 23rd
            start = datetime(2026, 11, 24, hour, tzinfo=UTC)
            store.record_usage("m1", usage(f"b{hour}", f"{start:%Y-%m-%dT%H:%M:%SZ}",
                                           f"{start + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
                                           2, unconfirmed=1 if hour == 3 else 0), NOW)
    days = reports.fill(store, reports.periods("day", date(2026, 11, 24), 2), now=NOW)
    assert days[0].covered == {} and days[0].total() == 0
    assert days[1].covered == {"m1": 0.5}
    assert (days[1].total(), days[1].total(unconfirmed=True)) == (24, 1)
    text = reports.usage_csv(store, date(2026, 11, 24), date(2026, 11, 25))
    assert text.splitlines() == ["machine,product,confirmed,unconfirmed,coverage,buckets",
                                 "m1,foil,0,0,0.500,12", "m1,syringe-1ml,24,1,0.500,12"]
    chart = reports.bar_chart(days, "by day")
    assert chart.startswith("<svg") and "24 packs, 1 unconfirmed" in chart


def machine(tmp_path, state: dict | None = None, stock: dict | None = None,
            availability: str = "online", heard: datetime = NOW):
    store = SqliteStore(tmp_path / "c.db")
    with store.transaction():
        store.heard("m1", heard)
        store.record_availability("m1", availability, heard)
        if state:
            store.record_state("m1", StateMessage.read({
                "schema": 1, "mode": "in_service", "door": "closed", "sharps_bin": "ok",
                "temperature_c": None, "faults": [], "version": "t", "uptime_s": 1,
                "clock_synced": True, "ts": "2026-11-25T12:00:00Z", **state}), heard)
        if stock:
            store.record_stock("m1", StockMessage.read(stock), heard)
    found = store.machine("m1")
    store.close()
    return found


def test_alert_conditions_come_from_what_was_heard(tmp_path):
    stock = {"schema": 1, "ts": "2026-11-25T12:00:00Z", "slots": [],
             "products": {"foil": {"count": 0, "status": "empty"},
                          "citric": {"count": 2, "status": "low"},
                          "water": {"count": 9, "status": "ok"}}}
    m = machine(tmp_path, state={"faults": ["slot 3: jam", "storage_fault"], "door": "open",
                                 "sharps_bin": "full"}, stock=stock)
    kinds = {(kind, subject) for _, kind, subject, _ in conditions_of(m, NOW, 600)}
    assert kinds == {("jam", "slot 3"), ("storage_fault", ""), ("door_open", ""),
                     ("sharps_bin_full", ""), ("empty", "foil"), ("low_stock", "citric")}


def test_offline_is_availability_offline_or_silence_for_offline_after_s(tmp_path):
    quiet = machine(tmp_path, heard=NOW - timedelta(seconds=601))
    assert [k for _, k, _, _ in conditions_of(quiet, NOW, 600)] == ["offline"]
    (tmp_path / "c.db").unlink()
    just_gone = machine(tmp_path, availability="offline", heard=NOW - timedelta(seconds=30))
    assert conditions_of(just_gone, NOW, 600) == []
    assert [k for _, k, _, _ in conditions_of(just_gone, NOW + timedelta(seconds=600), 600)] == [
        "offline"]

"""Stock with dates, at the machine: a slot's packs carry the month they expire at the end of
(given at refill), the soonest to expire is given first, a slot past its date is skipped while
one in date has packs and used when none has (access first, and staff are told), and packs
taken out past their date are told to the hub for the reports."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controller import stock
from controller.clock import FakeClock
from controller.ledger import SlotState
from tests.conftest import BASE, Rig, make_config

TWO_NALOXONE = [*BASE["slots"], {"slot": 5, "product": "naloxone", "capacity": 5, "low_at": 1}]
NALOXONE = 3  # its button


def told(rig: Rig, kind: str) -> list[dict]:
    return [json.loads(p) for _, k, p in rig.ledger.outbox(10_000) if k == kind]


def rig_with_two_naloxone_slots(tmp_path) -> Rig:
    rig = Rig(make_config(tmp_path, slots=TWO_NALOXONE),
              clock=FakeClock(datetime(2027, 2, 20, 22, 0, tzinfo=UTC)))
    for slot, count, expiry in ((4, 3, "2027-03"), (5, 5, "2027-09")):
        rig.model.load(slot, count)
        answer = rig.command(cmd="refill", slot=slot, count=count, expiry=expiry)
        assert answer["ok"] and answer["result"]["slots"][0]["expires"] == expiry, answer
    return rig


def test_the_soonest_to_expire_goes_first_and_a_slot_past_its_date_only_when_none_else_can(
        tmp_path):
    rig = rig_with_two_naloxone_slots(tmp_path)
    rig.press(NALOXONE)  # slot 5 is fuller, but slot 4's packs expire sooner
    assert rig.model.packs_dropped()[4] == 1 and rig.model.packs_dropped()[5] == 0
    rig.clock.advance((datetime(2027, 4, 1, 0, 30, tzinfo=UTC) - rig.clock.now()).total_seconds())
    rig.tick()
    rig.press(NALOXONE)  # 1 April: slot 4's March packs are past their date
    assert rig.model.packs_dropped()[4] == 1 and rig.model.packs_dropped()[5] == 1
    for _ in range(4):  # slot 5 given out to the last pack
        rig.press(NALOXONE)
    assert rig.counts()[5] == 0 and rig.model.packs_dropped()[4] == 1
    rig.close_bucket()
    assert not [e for e in told(rig, "event") if e["type"] == "expired_given"]
    rig.press(NALOXONE)  # nothing in date has a pack: the client still gets one
    rig.press(NALOXONE)
    assert rig.model.packs_dropped()[4] == 3 and rig.vm.screen == "thank_you"
    assert not [e for e in told(rig, "event") if e["type"] == "expired_given"]  # held
    rig.close_bucket()
    [given_out] = [e for e in told(rig, "event") if e["type"] == "expired_given"]  # once
    assert (given_out["slot"], given_out["product"]) == (4, "naloxone")
    assert given_out["ts"] == told(rig, "usage")[-1]["end"]  # the bucket's end, not the press
    assert rig.ledger.totals()["naloxone"]["confirmed"] == 8


def test_a_slot_refilled_without_a_date_keeps_none_and_the_stock_says_each_slots_date(tmp_path):
    rig = rig_with_two_naloxone_slots(tmp_path)
    slots = {s["slot"]: s for s in rig.vm.stock_report()["slots"]}
    assert (slots[4]["expires"], slots[5]["expires"]) == ("2027-03", "2027-09")
    assert "expires" not in slots[1]  # undated: left out, as readers expect
    rig.refill(4, 5)
    assert "expires" not in {s["slot"]: s for s in rig.vm.stock_report()["slots"]}[4]
    rig.restart()
    assert rig.vm.slots[5].expires == "2027-09" and rig.vm.slots[4].expires is None


def test_packs_taken_out_past_their_date_are_told_and_a_bad_date_changes_nothing(tmp_path):
    rig = rig_with_two_naloxone_slots(tmp_path)
    answer = rig.command(cmd="refill", slot=4, count=5, expiry="2028-01", expired=2)
    assert answer["ok"] and answer["result"]["slots"][0]["expired"] == 2
    [removed] = [e for e in told(rig, "event") if e["type"] == "expired_removed"]
    assert (removed["slot"], removed["product"], removed["count"]) == (4, "naloxone", 2)
    before = {n: (s.count, s.expires) for n, s in rig.vm.slots.items()}
    for request, error in (
            ({"slot": 4, "count": 1, "expiry": "2027-13"}, "expiry: must be a month such as"),
            ({"slot": 4, "count": 1, "expiry": "March"}, "expiry: must be a month such as"),
            ({"slot": 4, "count": 1, "expired": -1}, "expired: must be a whole number"),
            ({"all": True, "expired": 3}, "expired: is a slot's"),
            ({"slot": 4, "count": 1, "expiry": 202703}, "expiry: must be a string")):
        answer = rig.command(cmd="refill", **request)
        assert not answer["ok"] and answer["error"].startswith(error), (request, answer)
    assert {n: (s.count, s.expires) for n, s in rig.vm.slots.items()} == before
    answer = rig.command(cmd="refill", all=True, expiry="2027-12")
    assert answer["ok"] and {s.expires for s in rig.vm.slots.values()} == {"2027-12"}


@given(slots=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([None, "2026-10", "2026-11",
                                                                    "2027-01", "2027-06"]),
                                st.booleans()), min_size=1, max_size=5))
def test_a_slot_in_date_with_packs_is_always_chosen_before_one_past_its_date(slots):
    today = date(2026, 12, 1)
    states = [SlotState(n + 1, "naloxone", count, 5, 1, enabled=healthy, expires=expires)
              for n, (count, expires, healthy) in enumerate(slots)]
    chosen = stock.choose_slot(states, "naloxone", today=today)
    serving = [s for s in states if s.enabled]
    if not serving:
        assert chosen is None
        return
    fresh = [s for s in serving if s.count > 0 and not stock.expired(s, today)]
    if fresh:
        soonest = min(s.expires or "9999-99" for s in fresh)
        assert chosen in fresh and (chosen.expires or "9999-99") == soonest
    elif any(s.count > 0 for s in serving):
        assert chosen.count > 0  # past its date, but a pack: access first
    assert stock.use_until("2026-11") == today and stock.expired(
        SlotState(1, "n", 1, 5, 1, expires="2026-11"), today)
    assert not stock.expired(SlotState(1, "n", 1, 5, 1, expires="2026-11"),
                             today - timedelta(days=1))


# -- at the hub: alerts, the pick list, the machine page's words and the reports -------------
def hub_with_naloxone(tmp_path, hook, clock):
    from hub.alerts import Alerts
    from hub.config import parse_hub_config
    from hub.store import SqliteStore
    from tests.machines import known

    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "alerts": {"routes": [
        {"types": ["expiring", "expired"], "webhook": hook.url}]}, "machines": known("m1")})
    store = SqliteStore(tmp_path / "hub.db")
    return config, Alerts(config, store, clock), store


def tell_stock(store, clock, expires: dict[int, str | None], counts: dict[int, int]) -> None:
    from controller.messages import StockMessage

    slots = [{"slot": n, "product": "naloxone", "count": counts[n], "capacity": 5, "low_at": 1,
              "status": "ok" if counts[n] > 1 else "low", **({"expires": e} if e else {})}
             for n, e in expires.items()]
    with store.transaction():
        store.fleet.heard("m1", clock.now())
        store.fleet.record_stock("m1", StockMessage.read({
            "schema": 1, "ts": f"{clock.now():%Y-%m-%dT%H:%M:%SZ}", "slots": slots,
            "products": {"naloxone": {"count": sum(counts.values()), "status": "ok",
                                      "name": "naloxone kit", "shelf_life_months": 24}}}),
            clock.now())


def test_the_hub_says_expiring_30_days_before_and_expired_on_the_day_once_each(tmp_path):
    from hub import board
    from tests.test_hub import Webhook

    hook = Webhook()
    clock = FakeClock(datetime(2027, 2, 28, 12, 0, tzinfo=UTC))
    try:
        config, alerts, store = hub_with_naloxone(tmp_path, hook, clock)
        tell_stock(store, clock, {4: "2027-03", 5: "2027-09"}, {4: 3, 5: 5})

        def said() -> list[tuple[str, str, str]]:
            alerts.deliver()
            return [(b["type"], b["state"], b["detail"]) for b in hook.bodies]

        alerts.check()
        assert said() == []  # 1 Apr is 32 days off
        clock.advance(2 * 86400)  # 2 Mar: 30 days before the first day past March
        for _ in range(3):
            alerts.check()
            clock.advance(3600)
        assert said() == [("expiring", "raised", "Slot 4 (naloxone kit): use by end of Mar 2027")]
        rows, totals = board.pick_list(config, store, clock.now(), None)
        [row] = [r for r in rows if r.slot == 4]
        assert rows[0] is row and row.need == 5  # first, and a slot's worth of fresh packs
        assert row.words == "Use by end of Mar 2027: empty it and refill with fresh packs"
        clock.advance((datetime(2027, 4, 1, 0, 0, 5, tzinfo=UTC) - clock.now()).total_seconds())
        for _ in range(3):
            alerts.check()
            clock.advance(60)
        assert said()[1:] == [("expired", "raised",
                               "Slot 4 (naloxone kit): past its date (end of Mar 2027)")]
        tile = board.tile_of(config, store, store.fleet.machine("m1"), "m1", clock.now(), None, {})
        dates = [p.text for p in tile.problems if "Slot 4" in p.text]
        assert dates == ["Slot 4 (naloxone kit): past its date (end of Mar 2027)"]  # not twice
        [row] = [r for r in board.pick_list(config, store, clock.now(), None)[0] if r.slot == 4]
        assert row.dated == "expired" and row.words.startswith("Past its date (Mar 2027): empty")
        dated = board.slot_date(store.fleet.machine("m1").stock, store.fleet.machine("m1").stock.slots[0],
                                clock.now().date(), 30)
        assert (dated.state, dated.words, dated.suggest) == ("expired", "Mar 2027: past its date",
                                                             "2029-04")  # 24 months on
        # a refill with a later date clears both, once
        tell_stock(store, clock, {4: "2029-04", 5: "2027-09"}, {4: 5, 5: 5})
        for _ in range(3):
            alerts.check()
            clock.advance(10)
        assert sorted((kind, state, detail.split(" after ")[0]) for kind, state, detail
                      in said()[2:]) == [
            ("expired", "cleared", "Slot 4 (naloxone kit): no packs past their date now"),
            ("expiring", "cleared", "Slot 4 (naloxone kit): no packs near their date now")]
        alerts.check()
        assert len(said()) == 4  # nothing more
        store.close()
    finally:
        hook.close()


def test_packs_taken_out_past_their_date_are_in_the_reports_once(tmp_path):
    from controller.messages import EventMessage
    from hub import reports
    from hub.store import SqliteStore

    store = SqliteStore(tmp_path / "hub.db")
    event = EventMessage(id="e1", ts="2027-04-02T10:15:00Z", type="expired_removed", slot=4,
                         product="naloxone", detail="3 packs past their date taken out", count=3)
    with store.transaction():
        store.fleet.heard("m1", datetime(2027, 4, 2, tzinfo=UTC))
        assert store.fleet.record_event("m1", event, datetime(2027, 4, 2, tzinfo=UTC))
        assert not store.fleet.record_event("m1", event, datetime(2027, 4, 2, tzinfo=UTC))  # again
    [april] = reports.fill(store, [reports.Period("Apr 2027", datetime(2027, 4, 1, tzinfo=UTC),
                                                  datetime(2027, 5, 1, tzinfo=UTC))])
    assert april.expired == {"naloxone": 3}
    assert EventMessage.read(event.encode()).count == 3
    store.close()


def test_a_held_event_keeps_its_count_until_its_bucket_closes(tmp_path):
    from controller.ledger import Event, Ledger

    ledger = Ledger(tmp_path / "nspvend.db", "m1")
    with ledger.transaction():
        ledger.hold_event(Event("expired_given", 4, "naloxone", "past its date", count=1))
    with ledger.transaction():
        ledger.release_held(datetime(2027, 4, 1, 1, 0, tzinfo=UTC))
    [event] = [json.loads(p) for _, k, p in ledger.outbox(10) if k == "event"]
    assert (event["type"], event["count"], event["ts"]) == ("expired_given", 1,
                                                             "2027-04-01T01:00:00Z")
    ledger.close()

"""Alerts in process, on a hand-moved clock: a failed delivery is tried again on its
schedule, a route hears only within its hours and at most ten a minute. The store is a real
SQLite file, the webhook a real HTTP server on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.clock import FakeClock
from controller.messages import StateMessage, StockMessage
from hub.alerts import CLEAR_AFTER_S, MACHINE_PER_HOUR, RETRIES, ROUTE_PER_MINUTE, Alerts
from hub.config import parse_hub_config
from hub.store import SqliteStore
from tests.machines import known
from tests.test_hub import Mailbox, Webhook

TUESDAY_NIGHT = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)  # Europe/London: 23:00
SHARED = {"protocol": "5", "share_group": "hubs-" + "x" * 16}  # several hub processes


@pytest.fixture
def hook():
    h = Webhook()
    yield h
    h.close()


def hub(tmp_path, hook: Webhook, clock: FakeClock, **route) -> tuple[Alerts, SqliteStore]:
    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "alerts": {"routes": [
        {"types": ["jam"], "webhook": hook.url, **route}]}, "machines": known("m1")})
    store = SqliteStore(tmp_path / "hub.db")
    return Alerts(config, store, clock), store


def jammed(store: SqliteStore, clock: FakeClock, *slots: int, machine: str = "m1") -> None:
    """``machine`` says (now) that ``slots`` are jammed."""
    with store.transaction():
        store.fleet.heard(machine, clock.now())
        store.fleet.record_state(machine, StateMessage.read({
            "schema": 1, "mode": "in_service", "door": "closed", "sharps_bin": "ok",
            "temperature_c": None, "faults": [f"slot {n}: jam" for n in slots], "version": "t",
            "uptime_s": 1, "clock_synced": True, "ts": f"{clock.now():%Y-%m-%dT%H:%M:%SZ}"}),
            clock.now())


def test_a_failed_delivery_is_tried_again_on_its_schedule_and_then_delivered(tmp_path, hook):
    hook.failing = 2
    clock = FakeClock(TUESDAY_NIGHT)
    alerts, store = hub(tmp_path, hook, clock)
    jammed(store, clock, 3)
    alerts.check()
    assert alerts.deliver() == 0 and hook.refused == 1  # 503: tried again in 30 s
    clock.advance(RETRIES[0] - 1)
    assert alerts.deliver() == 0 and hook.refused == 1  # not yet
    clock.advance(1)
    assert alerts.deliver() == 0 and hook.refused == 2  # 503 again: in 60 s
    clock.advance(RETRIES[1] - 1)
    assert alerts.deliver() == 0
    clock.advance(1)
    assert alerts.deliver() == 1
    [body] = hook.bodies
    assert (body["type"], body["state"], body["machine"]) == ("jam", "raised", "m1")
    [delivery] = store.alerts.deliveries()
    assert delivery["attempts"] == 3 and delivery["done"] and delivery["error"] is None
    clock.advance(3600)
    assert alerts.deliver() == 0 and len(hook.bodies) == 1  # delivered once


def test_a_delivery_that_keeps_failing_is_given_up_after_the_last_retry(tmp_path, hook):
    hook.failing = len(RETRIES) + 5
    clock = FakeClock(TUESDAY_NIGHT)
    alerts, store = hub(tmp_path, hook, clock)
    jammed(store, clock, 3)
    alerts.check()
    for wait in (0, *RETRIES):
        clock.advance(wait)
        alerts.deliver()
    assert hook.refused == len(RETRIES) + 1
    [delivery] = store.alerts.deliveries()
    assert delivery["done"].startswith("gave up") and "503" in delivery["error"]
    clock.advance(86400)
    alerts.deliver()
    assert hook.refused == len(RETRIES) + 1


def test_a_route_hears_only_within_its_hours_and_then_of_what_is_still_wrong(tmp_path, hook):
    clock = FakeClock(TUESDAY_NIGHT)  # 23:00 in London
    alerts, store = hub(tmp_path, hook, clock, hours="Mon-Fri 09:00-17:00")
    jammed(store, clock, 3)
    alerts.check()
    alerts.deliver()
    assert hook.bodies == []  # out of hours
    clock.advance(9 * 3600 + 60)  # Wednesday 08:01: still out of hours
    alerts.check()
    alerts.deliver()
    assert hook.bodies == []
    clock.advance(3600)  # 09:01: in hours, and the slot is still jammed
    alerts.check()
    alerts.deliver()
    [body] = hook.bodies
    assert body["state"] == "raised" and body["ts"] == "2026-12-01T23:00:00Z"  # when it was


def test_a_route_hears_at_most_ten_a_minute_and_the_rest_wait_their_turn(tmp_path, hook):
    clock = FakeClock(TUESDAY_NIGHT)
    alerts, store = hub(tmp_path, hook, clock)
    jammed(store, clock, *range(1, 14))  # thirteen slots at once
    alerts.check()
    assert alerts.deliver() == ROUTE_PER_MINUTE == 10
    clock.advance(59)
    assert alerts.deliver() == 0
    clock.advance(1)
    assert alerts.deliver() == 3
    assert sorted(b["detail"] for b in hook.bodies) == sorted(
        f"Slot {n} jammed" for n in range(1, 14))
    assert len(hook.bodies) == 13  # each once


def test_raised_and_cleared_once_each_however_often_it_is_checked(tmp_path, hook):
    clock = FakeClock(TUESDAY_NIGHT)
    alerts, store = hub(tmp_path, hook, clock)
    jammed(store, clock, 3)
    for _ in range(3):
        alerts.check()
        alerts.deliver()
        clock.advance(timedelta(seconds=30).total_seconds())
    jammed(store, clock)  # mended
    for _ in range(3):
        alerts.check()
        alerts.deliver()
        clock.advance(CLEAR_AFTER_S / 2)
    assert [(b["type"], b["state"]) for b in hook.bodies] == [("jam", "raised"), ("jam", "cleared")]


def test_a_slot_flapping_is_one_alert_and_a_route_hears_ten_in_any_minute(tmp_path, hook):
    """A slot jammed, mended, jammed again every 2 s is raised once and cleared once it stays
    mended; thirteen slots at once reach the route ten in the first minute, checked every
    2 s (the limit is a real minute, not each round of deliveries)."""
    clock = FakeClock(TUESDAY_NIGHT)
    alerts, store = hub(tmp_path, hook, clock)
    for i in range(30):
        jammed(store, clock, *((3,) if i % 2 == 0 else ()))
        alerts.check()
        alerts.deliver()
        clock.advance(2)
    assert [(b["type"], b["state"]) for b in hook.bodies] == [("jam", "raised")]
    jammed(store, clock)
    for _ in range(10):
        alerts.check()
        alerts.deliver()
        clock.advance(2)
    assert [(b["type"], b["state"]) for b in hook.bodies] == [("jam", "raised"), ("jam", "cleared")]
    hook.bodies.clear()
    clock.advance(60)
    jammed(store, clock, *range(1, 14))
    sent = []
    for _ in range(29):  # 58 s of rounds every 2 s
        alerts.check()
        sent.append(alerts.deliver())
        clock.advance(2)
    assert sum(sent) == ROUTE_PER_MINUTE


def test_one_machine_s_alerts_are_capped_an_hour_and_the_rest_stay_on_the_page(tmp_path, hook):
    clock = FakeClock(TUESDAY_NIGHT)
    alerts, store = hub(tmp_path, hook, clock)
    for i in range(40):  # a new slot jams every minute: 40 conditions, all different
        jammed(store, clock, *range(1, i + 2))
        alerts.check()
        clock.advance(60)
        alerts.deliver()
    assert len(hook.bodies) == MACHINE_PER_HOUR
    assert len(store.alerts.alert_log(TUESDAY_NIGHT)) == 40  # every one on /alerts


def test_what_a_machine_names_a_product_reaches_email_on_one_line_and_the_webhook_whole(
        tmp_path, hook):
    """A product's name is the machine's words: a line break in it must not stop the email
    (a header may not hold one), and the webhook names the machine and the product."""
    mail = Mailbox()
    try:
        config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "alerts": {
            "smtp_host": "127.0.0.1", "smtp_port": mail.port, "routes": [
                {"types": ["empty"], "webhook": hook.url, "email": ["oncall@example.org"]}]},
            "machines": [{"id": "m1", "name": "Mare Street"}]})
        clock = FakeClock(TUESDAY_NIGHT)
        store = SqliteStore(tmp_path / "hub.db")
        alerts = Alerts(config, store, clock)
        with store.transaction():
            store.fleet.heard("m1", clock.now())
            store.fleet.record_stock("m1", StockMessage.read({
                "schema": 1, "ts": "2026-12-01T23:00:00Z",
                "slots": [{"slot": 1, "product": "foil", "count": 0, "capacity": 10,
                           "low_at": 2, "status": "empty"}],
                "products": {"foil": {"count": 0, "status": "empty",
                                      "name": "foil\nBcc: all@example.org"}}}), clock.now())
        alerts.check()
        assert alerts.deliver() == 2
        [body] = hook.bodies
        assert (body["name"], body["product"]) == ("Mare Street", "foil\nBcc: all@example.org")
        [message] = mail.messages
        assert message["Subject"] == "[nspvend] Mare Street: Foil Bcc: all@example.org: none left"
        assert message["Bcc"] is None
        assert "Raised Tue 1 Dec, 23:00." in message.get_payload()  # local time, in words
    finally:
        mail.close()


def test_a_clearing_is_stamped_with_the_message_that_showed_it_not_a_later_one(tmp_path, hook):
    """Promise 2: the jam's end is the bucket end the mended state was told at, even when a
    state that says nothing new (a reconnect's) arrives before the clearing's delay is up."""
    clock = FakeClock(TUESDAY_NIGHT)
    alerts, store = hub(tmp_path, hook, clock)
    jammed(store, clock, 3)
    alerts.check()
    clock.advance(60)
    jammed(store, clock)  # mended, told at this bucket's end
    mended_at = clock.now()
    alerts.check()
    clock.advance(3)
    jammed(store, clock)  # the same again, at another moment
    for _ in range(5):
        clock.advance(2)
        alerts.check()
    [row] = store.alerts.alert_log(TUESDAY_NIGHT)
    assert row["cleared"] == f"{mended_at:%Y-%m-%dT%H:%M:%SZ}"


def test_a_sweep_goes_over_a_big_fleet_in_turn_and_keeps_up_with_raised_alerts(
        tmp_path, hook, monkeypatch):
    """Past SWEEP_AT_MOST machines each pass works out a share of them in turn: all seven
    gone quiet are found offline within three passes of three. A machine with an alert
    raised is worked out again when heard since the last pass (whichever process stored
    it), or while its alert waits to clear, though its turn is not due; not at every pass."""
    import hub.alerts

    monkeypatch.setattr(hub.alerts, "SWEEP_AT_MOST", 3)
    clock = FakeClock(TUESDAY_NIGHT)
    ids = [f"m{i}" for i in range(1, 8)]
    config = parse_hub_config({"mqtt": {"host": "127.0.0.1", **SHARED},
                               "machines": known(*ids), "alerts": {"offline_after_s": 600}})
    store = SqliteStore(tmp_path / "hub.db")
    alerts = Alerts(config, store, clock)
    for machine in ids:
        jammed(store, clock, machine=machine)  # heard now: online, no jam (none listed)
        with store.transaction():
            store.fleet.record_availability(machine, "online", clock.now())
    clock.advance(601)  # every one of them silent since

    def offline() -> set[str]:
        return {m for m, kind, _ in store.alerts.raised_alerts() if kind == "offline"}

    found = []
    for _ in range(3):
        alerts.sweep()
        found.append(len(offline()))
    assert found == [3, 6, 7]  # three a pass, in turn, none twice
    read: list[set[str]] = []
    words = store.fleet.machines
    monkeypatch.setattr(store.fleet, "machines",
                        lambda ids=None: read.append(set(ids or ())) or words(ids))
    clock.advance(60)
    alerts.sweep()  # m3-m5's turn: nobody heard since the last pass, so no other is read
    jammed(store, clock, machine="m5")  # m5 speaks again (stored by any process): online
    clock.advance(31)
    alerts.sweep()  # m6, m7, m1's turn; m5 heard since the last pass: found gone
    clock.advance(CLEAR_AFTER_S + 1)
    alerts.sweep()  # m2-m4's turn; m5 not heard since, but its alert waits to clear: cleared
    assert read == [{"m3", "m4", "m5"}, {"m6", "m7", "m1", "m5"}, {"m2", "m3", "m4", "m5"}]
    assert "m5" not in offline() and len(offline()) == 6
    store.close()


@pytest.mark.parametrize("shared", [False, True])
def test_a_raised_machine_heard_is_read_again_by_the_sweeps_only_if_another_process_may_have(
        tmp_path, hook, monkeypatch, shared):
    """A process alone worked out each machine as it stored what it said (Alerts.heard): its
    sweeps do not read again every raised machine heard lately (at 10,000 machines with a
    fifth low, every sweep for half a minute after they spoke). Sharing the machines'
    words, the process running the alerts did not hear them all, and does."""
    import hub.alerts
    from hub.listener import Heard

    monkeypatch.setattr(hub.alerts, "SWEEP_AT_MOST", 2)
    clock = FakeClock(TUESDAY_NIGHT)
    ids = [f"m{i}" for i in range(1, 8)]
    config = parse_hub_config({"mqtt": {"host": "127.0.0.1", **(SHARED if shared else {})},
                               "machines": known(*ids)})
    store = SqliteStore(tmp_path / "hub.db")
    alerts = Alerts(config, store, clock)
    for machine in ids:
        jammed(store, clock, *([1] if machine == "m5" else []), machine=machine)
        with store.transaction():
            store.fleet.record_availability(machine, "online", clock.now())
    alerts.check()  # m5's jam raised
    alerts.sweep()  # m1 and m2's turn
    clock.advance(10)
    jammed(store, clock, 1, machine="m5")  # jammed still
    alerts.heard([Heard("m5", "state", None)])
    read: list[set[str]] = []
    words = store.fleet.machines
    monkeypatch.setattr(store.fleet, "machines",
                        lambda ids=None: read.append(set(ids or ())) or words(ids))
    alerts.sweep()  # m3 and m4's turn
    assert read == ([{"m5"}] if shared else [set()])
    store.close()


def test_with_several_processes_a_sweep_raises_what_another_process_stored_at_once(
        tmp_path, hook, monkeypatch):
    """Hub processes sharing the machines' words: a jam another process stored (so this
    one, running the alerts, never heard it) is raised by the next sweep, though the
    machine's turn is not due; a machine heard saying all is well is not read for it. A
    first sweep (a process just given the alerts) goes in turn: at a start after an outage
    every machine is not well, and is not read at once."""
    import hub.alerts

    monkeypatch.setattr(hub.alerts, "SWEEP_AT_MOST", 2)
    clock = FakeClock(TUESDAY_NIGHT)
    ids = [f"m{i}" for i in range(1, 8)]
    config = parse_hub_config({"mqtt": {"host": "127.0.0.1", **SHARED},
                               "machines": known(*ids)})
    store = SqliteStore(tmp_path / "hub.db")
    alerts = Alerts(config, store, clock)
    for machine in ids:
        jammed(store, clock, machine=machine)  # heard: no jam
        with store.transaction():
            store.fleet.record_availability(machine, "online", clock.now())
    jammed(store, clock, 1, machine="m5")  # stored by the other process
    read: list[set[str]] = []
    words = store.fleet.machines
    monkeypatch.setattr(store.fleet, "machines",
                        lambda ids=None: read.append(set(ids or ())) or words(ids))
    alerts.sweep()  # m1 and m2's turn
    clock.advance(60)
    jammed(store, clock, 2, machine="m6")  # stored by the other process
    jammed(store, clock, machine="m7")
    alerts.sweep()  # m3 and m4's turn
    assert read == [set(), {"m5", "m6"}]
    assert sorted(key[:2] for key in store.alerts.raised_alerts()) == [("m5", "jam"),
                                                                         ("m6", "jam")]
    store.close()


def test_a_whole_fleet_going_offline_and_coming_back_is_one_commit_each_way(
        tmp_path, monkeypatch):
    """After an outage every machine is found offline at once, and heard again at once: the
    alerts raised (or cleared) by one check are one transaction, not one each (each waits
    for the disk; 8,000 of them held the listener's thread for 26 s at 10,000 machines)."""
    clock = FakeClock(TUESDAY_NIGHT)
    ids = [f"m{i:03d}" for i in range(60)]
    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "machines": known(*ids),
                               "alerts": {"offline_after_s": 600}})
    store = SqliteStore(tmp_path / "hub.db")
    alerts = Alerts(config, store, clock)
    for machine in ids:
        jammed(store, clock, machine=machine)
    commits = []
    transaction = store.db.transaction
    monkeypatch.setattr(store.db, "transaction", lambda: commits.append(1) or transaction())
    clock.advance(601)
    alerts.check()
    assert len(store.alerts.raised_alerts()) == 60 and len(commits) == 1
    for machine in ids:
        jammed(store, clock, machine=machine)  # (each its own: the listener's batches)
    commits.clear()
    alerts.check()  # found gone: cleared once gone long enough
    clock.advance(CLEAR_AFTER_S + 1)
    alerts.check()
    assert store.alerts.raised_alerts() == {} and len(commits) == 1
    assert len(store.alerts.alert_log(TUESDAY_NIGHT)) == 60
    store.close()


def test_buckets_alone_end_what_is_raised_and_raise_nothing(tmp_path, hook, monkeypatch):
    """After a batch of usage buckets the alerts look again only at those of its machines
    with an offline or a silence raised (what a bucket can end; it never raises anything):
    a backlog from a thousand machines does not have a thousand machines' words worked out
    after every batch. What their states say is raised when the states come, or by a sweep."""
    from hub.listener import Heard
    from simulator.fleet import bucket

    clock = FakeClock(TUESDAY_NIGHT)
    config = parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "machines": known("m1", "m2"),
                               "alerts": {"offline_after_s": 600}})
    store = SqliteStore(tmp_path / "hub.db")
    alerts = Alerts(config, store, clock)
    jammed(store, clock, machine="m1")
    with store.transaction():
        store.fleet.record_availability("m1", "online", clock.now())
    clock.advance(601)
    alerts.check()
    assert {(m, k) for m, k, _ in store.alerts.raised_alerts()} == {("m1", "offline")}
    jammed(store, clock, 1, machine="m2")  # stored, not yet worked out (as a batch mid-way)
    with store.transaction():
        store.fleet.record_availability("m2", "online", clock.now())

    def buckets(*machines: str) -> list[Heard]:
        with store.transaction():
            store.fleet.heard_from(list(machines), clock.now())
        return [Heard(m, "usage", bucket(clock.now(), {"foil": 1}), True) for m in machines]

    alerts.heard(buckets("m1", "m2"))  # m1 heard again: its offline found gone
    assert ("m2", "jam", "slot 1") not in store.alerts.raised_alerts()  # not from a bucket
    clock.advance(CLEAR_AFTER_S + 1)
    alerts.heard(buckets("m1"))
    assert ("m1", "offline", "") not in store.alerts.raised_alerts()  # ended by its buckets
    alerts.heard([Heard("m2", "state", None, True)])  # its state's own batch raises it
    assert ("m2", "jam", "slot 1") in store.alerts.raised_alerts()
    read: list[set[str]] = []
    words = store.fleet.machines
    monkeypatch.setattr(store.fleet, "machines",
                        lambda ids=None: read.append(set(ids or ())) or words(ids))
    alerts.heard(buckets("m1", "m2"))  # a jam raised: no bucket ends it, so nothing is read
    assert read == [] and ("m2", "jam", "slot 1") in store.alerts.raised_alerts()
    store.close()

"""The fleet board at a national fleet's size: it sorts, filters and pages machines from the
store's short summary of each (hub.rank), and works out the full tile only for the page
shown. The summary must say what the tile says: a property test holds them together on a
real SQLite file, for machines in every state the contract allows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.messages import ProductStock, SlotStock, StockMessage
from hub import board
from hub.alerts import conditions_of
from hub.config import parse_hub_config
from hub.rank import URGENCY, bounds, ranker
from hub.store import PgStore, SqliteStore
from simulator import fleet

NOW = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
OFFLINE_AFTER_S = 900


def config(machines: list[dict]):
    return parse_hub_config({"mqtt": {"host": "127.0.0.1"}, "machines": machines,
                             "alerts": {"offline_after_s": OFFLINE_AFTER_S,
                                        "expiring_days": 30}})


def stock_of(counts: list[int], statuses: list[str], expires: list[str | None]) -> StockMessage:
    slots = tuple(SlotStock(i + 1, product, count, 20, 3, status, expires=expiry)
                  for i, (product, count, status, expiry)
                  in enumerate(zip(fleet.PRODUCTS, counts, statuses, expires, strict=False)))
    products: dict[str, ProductStock] = {}
    for s in slots:
        worst = "empty" if s.status == "empty" else "low" if s.status == "low" else "ok"
        products[s.product] = ProductStock(s.count, worst)
    return StockMessage(ts="2026-12-01T20:00:00Z", slots=slots, products=products)


TROUBLES = ["never", "long ago", "silent just now", "said offline", "availability unknown", "no state",
            "out_of_service", "service", "door open", "bin full", "jam", "storage_fault",
            "new fault", "no stock", "low", "empty", "slot fault", "disabled", "expired",
            "expiring", "expires later", "expired but none left", "silence"]


def build(troubles: list[str]) -> dict:
    """A machine in service with nothing wrong, and then ``troubles``."""
    counts, statuses, expires = [10, 10, 10, 10], ["ok"] * 4, [None] * 4
    m = {"heard": None if "never" in troubles else 3600 if "long ago" in troubles
         else OFFLINE_AFTER_S if "silent just now" in troubles else 60,
         "availability": "offline" if "said offline" in troubles
         else None if "availability unknown" in troubles else "online",
         "state": None if "no state" in troubles else {
             "mode": "service" if "service" in troubles
             else "out_of_service" if "out_of_service" in troubles else "in_service",
             "door": "open" if "door open" in troubles else "closed",
             "sharps_bin": "full" if "bin full" in troubles else "ok",
             "faults": [f for t, f in (("jam", "slot 1: jam"), ("storage_fault", "storage_fault"),
                                       ("new fault", "something_new")) if t in troubles]},
         "silence": "silence" in troubles}
    for i, (trouble, status) in enumerate((("low", "low"), ("empty", "empty"),
                                           ("slot fault", "fault"), ("disabled", "disabled"))):
        if trouble in troubles:
            statuses[i] = status
            counts[i] = 0 if status == "empty" else 2
    # NOW is 1 Dec 2026: packs dated November are past it, December near it (30 days)
    for trouble, month in (("expired", "2026-11"), ("expiring", "2026-12"),
                           ("expires later", "2027-06"), ("expired but none left", "2026-10")):
        if trouble in troubles:
            slot = {"expired": 0, "expiring": 1, "expires later": 2}.get(trouble, 3)
            expires[slot] = month
            if trouble == "expired but none left":
                counts[slot], statuses[slot] = 0, "empty"
    m["stock"] = None if "no stock" in troubles else (counts, statuses, expires)
    return m


machine = st.lists(st.sampled_from(TROUBLES), max_size=3, unique=True).map(build)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(machines=st.lists(machine, min_size=1, max_size=6))
def test_the_summary_ranks_each_machine_as_its_tile_does(tmp_path_factory, machines):
    store = SqliteStore(tmp_path_factory.mktemp("board") / "hub.db")
    ids = [f"m{i}" for i in range(len(machines))]
    cfg = config([{"id": mid, "name": mid} for mid in ids])
    keep(store, ids, machines)
    summaries = store.fleet.ranks()
    tiles = {t.id: t for t in board.tiles_of(cfg, store, NOW, ids)}
    rank = ranker(NOW, OFFLINE_AFTER_S, NOW.astimezone(cfg.tz).date(), 30)
    for mid in ids:
        if mid not in summaries:
            assert tiles[mid].state == "never" and tiles[mid].urgency == "offline"
            continue
        urgency, state = rank(*summaries[mid])
        assert (URGENCY[urgency], state) == (tiles[mid].urgency, tiles[mid].state), mid
    # and the board's order is the tiles' own: most urgent first, then by name
    expected = sorted(tiles.values(), key=lambda t: (URGENCY.index(t.urgency), t.name, t.id))
    assert board.order(cfg, store, NOW) == [t.id for t in expected]
    store.close()


def keep(store, ids: list[str], machines: list[dict]) -> None:
    """What each of ``machines`` (:func:`build`) said, stored as the machine ``ids``."""
    with store.transaction():
        for mid, m in zip(ids, machines, strict=True):
            if m["heard"] is None:
                continue
            at = NOW - timedelta(seconds=m["heard"])
            store.fleet.heard(mid, at)
            if m["availability"]:
                store.fleet.record_availability(mid, m["availability"], at)
            if m["state"]:
                store.fleet.record_state(mid, fleet.state(at, **m["state"]), at)
            if m["stock"]:
                store.fleet.record_stock(mid, stock_of(*m["stock"]), at)
            if m["silence"]:
                store.fleet.record_event(mid, fleet.event(at, "silence", detail="no pack"), at)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_database_ranks_each_machine_as_the_summary_does(tmp_path, request, kind):
    """The board's order comes from the urgencies the database works out
    (Fleet.urgencies): for every trouble alone and every two together, the same as
    hub.rank.ranker's from the machine's summary, on both databases."""
    store = (SqliteStore(tmp_path / "hub.db") if kind == "sqlite"
             else PgStore(request.getfixturevalue("postgres_server").database()))
    cases = [[t] for t in TROUBLES] + [list(pair) for pair in itertools.combinations(TROUBLES, 2)]
    ids = [f"m{i:03d}" for i in range(len(cases))]
    keep(store, ids, [build(troubles) for troubles in cases])
    cfg = config([{"id": mid, "name": mid} for mid in ids])
    today = NOW.astimezone(cfg.tz).date()
    # 45 days: December's packs (good until 1 January) are near their date on 1 December
    rank = ranker(NOW, OFFLINE_AFTER_S, today, 45)
    got = store.fleet.urgencies(*bounds(NOW, OFFLINE_AFTER_S, today, 45))
    want = {mid: rank(*summary)[0] for mid, summary in store.fleet.ranks().items()}
    assert len(want) > 250 and {URGENCY[u] for u in want.values()} == set(URGENCY)
    alone = {troubles[0]: URGENCY[want[mid]] for mid, troubles in zip(ids, cases, strict=True)
             if len(troubles) == 1 and mid in want}
    assert (alone["expiring"], alone["expired"], alone["silence"], alone["expires later"]) == (
        "low", "fault", "fault", "ok")
    assert {mid: URGENCY[u] for mid, u in got.by_id.items()} == {
        mid: URGENCY[u] for mid, u in want.items()}
    assert got.newest == store.fleet.newest()
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_alerts_pass_over_only_machines_the_summary_finds_well(tmp_path, request, kind):
    """The alerts read a machine's words only where its summary is less than "ok", or it
    has an alert raised (Fleet.not_ok): for a machine with nothing wrong, every trouble
    alone and every two together, each machine the alerts find something wrong with is one
    the database finds less than ok, on both databases."""
    store = (SqliteStore(tmp_path / "hub.db") if kind == "sqlite"
             else PgStore(request.getfixturevalue("postgres_server").database()))
    cases = [[], *([t] for t in TROUBLES), *(list(p) for p in itertools.combinations(TROUBLES, 2))]
    ids = [f"m{i:03d}" for i in range(len(cases))]
    keep(store, ids, [build(troubles) for troubles in cases])
    cfg = config([{"id": mid, "name": mid} for mid in ids])
    limits = bounds(NOW, OFFLINE_AFTER_S, NOW.astimezone(cfg.tz).date(), cfg.expiring_days)
    found = store.fleet.not_ok(None, *limits)
    wrong = {m.id for m in store.fleet.machines()
             if conditions_of(m, NOW, OFFLINE_AFTER_S, cfg.tz, cfg.expiring_days)}
    assert wrong and wrong <= found
    well = set(ids) - found  # nothing wrong at all, packs dated next June, ...
    assert {ids[0], ids[1 + TROUBLES.index("expires later")]} <= well
    assert found == {mid for mid, u in store.fleet.urgencies(*limits).by_id.items()
                     if URGENCY[u] != "ok"}
    some = set(ids[::3])  # and of some of them, as a batch asks
    assert store.fleet.not_ok(some, *limits) == found & some
    assert store.fleet.not_ok(set(), *limits) == set()
    store.close()


def test_the_board_pages_and_filters_by_area_state_and_name(tmp_path):
    areas = ["Hackney", "Camden", "Leeds"]
    machines = [{"id": f"site-{i:04d}", "name": f"Site {i:04d}", "area": areas[i % 3],
                 **({"place": "Mare Street"} if i == 7 else {})} for i in range(300)]
    cfg = config(machines)
    store = SqliteStore(tmp_path / "hub.db")
    with store.transaction():
        for i, m in enumerate(machines):
            if i % 10 == 9:
                continue  # never heard: offline
            store.fleet.heard(m["id"], NOW)
            store.fleet.record_availability(m["id"], "online", NOW)
            store.fleet.record_state(m["id"], fleet.state(NOW, door="open" if i % 10 == 1
                                                          else "closed"), NOW)
            store.fleet.record_stock(m["id"], fleet.stock(NOW, count=2 if i % 10 == 2 else 10),
                                     NOW)
    first = board.page_of(cfg, store, NOW, None, 1)
    pages = -(-300 // board.PER_PAGE)
    assert (first.page, first.pages, first.kept, first.known) == (1, pages, 300, 300)
    assert len(first.tiles) == board.PER_PAGE
    assert [t.state for t in first.tiles[:30]] == ["never"] * 30  # offline first
    every = [t.id for p in range(1, pages + 1)
             for t in board.page_of(cfg, store, NOW, None, p).tiles]
    assert sorted(every) == sorted(m["id"] for m in machines)  # each once across the pages
    assert board.page_of(cfg, store, NOW, None, 99).page == pages  # past the end: the last

    door = board.page_of(cfg, store, NOW, None, 1, show="door")
    assert door.kept == 30 and {t.state for t in door.tiles} == {"door_open"}
    low = board.page_of(cfg, store, NOW, "Hackney", 1, show="low")
    assert low.kept == 10 and all(t.area == "Hackney" and t.urgency == "low" for t in low.tiles)
    attention = board.page_of(cfg, store, NOW, None, 1, show="attention")
    assert attention.kept == 90 and "ok" not in {t.urgency for t in attention.tiles}
    assert board.page_of(cfg, store, NOW, None, 1, show="ok").kept == 210
    assert [t.id for t in board.page_of(cfg, store, NOW, None, 1, search="mare st").tiles] == [
        "site-0007"]  # by place, any case
    assert [t.id for t in board.page_of(cfg, store, NOW, None, 1, search="SITE 0042").tiles] == [
        "site-0042"]
    none = board.page_of(cfg, store, NOW, "Leeds", 1, search="0007")
    assert (none.kept, none.tiles, none.pages) == (0, [], 1)
    store.close()


def test_a_big_fleet_s_report_adds_its_machines_up_by_period(tmp_path):
    """Past BY_MACHINE_AT_MOST machines the reports page has a row per period for all of
    them (each machine's rows are in the CSV), its figures the machines' added up."""
    import asyncio

    from hub import reports
    from hub.web import Web

    ids = [f"site-{i:02d}" for i in range(reports.BY_MACHINE_AT_MOST + 1)]
    cfg = config([{"id": mid, "name": mid} for mid in ids])
    store = SqliteStore(tmp_path / "hub.db")
    with store.transaction():
        for i, mid in enumerate(ids):
            store.fleet.heard(mid, NOW)
            store.usage.record_usage(mid, fleet.bucket(NOW - timedelta(hours=3 + i % 5),
                                                       {"foil": 2, "syringe-1ml": i}), NOW)

    class Request:
        query_params = {"by": "month"}
        cookies: dict = {}

    web = Web(cfg, store, None, clock=type("Clock", (), {"now": staticmethod(lambda: NOW)})())
    page = asyncio.run(web.reports_page(Request(), {"name": "sam", "role": "viewer"})
                       ).body.decode()
    row = page.split('<tr data-where="machines">')[1].split("</tr>")[0]
    assert f"All {len(ids)} machines" in row
    assert 'data-label="Foil">62<' in row  # 2 a machine
    assert f'data-label="Syringe-1ml">{sum(range(len(ids)))}<' in row
    assert 'data-label="Coverage">5%<' in row  # an hour each of the 21 hours so far
    assert "site-03" not in page.split("<h2>Packs by product</h2>")[1]  # no row per machine
    assert "each machine’s packs, coverage and buckets are in the CSV" in page
    store.close()


def test_the_board_says_which_machines_need_updating_and_filters_them(tmp_path):
    """Each tile says its software and board firmware; one behind the newest the hub has
    heard of, or whose board is too old for its software (board_outdated), says what needs
    updating, and the "Needing an update" filter keeps just those."""
    machines = [{"id": f"m{i}", "name": f"Site {i}"} for i in range(4)]
    cfg = config(machines)
    store = SqliteStore(tmp_path / "hub.db")
    said = {"m0": ("0.3.0", "4", ()), "m1": ("0.2.0", "4", ()),  # software behind
            "m2": ("0.3.0", "3", ()),  # board firmware behind
            "m3": ("0.3.0", None, ("board_outdated",))}  # its board refused: too old
    with store.transaction():
        for mid, (version, firmware, faults) in said.items():
            store.fleet.heard(mid, NOW)
            store.fleet.record_availability(mid, "online", NOW)
            store.fleet.record_state(mid, fleet.state(NOW, faults, version=version,
                                                      board_firmware=firmware), NOW)
    tiles = {t.id: t for t in board.tiles_of(cfg, store, NOW, ["m0", "m1", "m2", "m3"])}
    assert (tiles["m0"].version, tiles["m0"].firmware, tiles["m0"].updates) == ("0.3.0", "4", [])
    assert tiles["m1"].updates == ["Software 0.2.0: 0.3.0 is out"]
    assert tiles["m2"].updates == ["Board firmware 3: 4 is out"]
    assert tiles["m3"].updates == [
        "Board firmware older than its software: run nspvend board update"]
    assert tiles["m3"].urgency == "fault"  # not serving: an alert too
    assert [p.text for p in tiles["m3"].problems] == [
        "Not serving: the dispenser board's firmware is older than the machine's software. At "
        "the machine: nspvend board update"]  # the alert's words
    page = board.page_of(cfg, store, NOW, None, 1)  # the newest read with the urgencies
    assert {t.id: t.updates for t in page.tiles} == {mid: t.updates for mid, t in tiles.items()}
    found = board.page_of(cfg, store, NOW, None, 1, show="outdated")
    assert sorted(t.id for t in found.tiles) == ["m1", "m2", "m3"] and found.kept == 3
    store.close()

"""Counts from people: the tally page and what the hub keeps of it.

The store keeps a bucket per person, channel and hour, its latest counts only, whatever order
its sends arrive in and however often (a stateful property test against a real SQLite file);
``POST /tally`` takes staff's buckets, refuses a viewer and names the field of a bad one
without changing anything; and in a real browser at a phone's 390 px, taps made with the
network cut or the hub stopped are kept, said to be waiting, and arrive once when it is back.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.clock import iso
from hub.store import SqliteStore, Tally
from tests.broker import MOSQUITTO
from tests.browser import HAVE_BROWSER, NO_BROWSER, PHONE, axe_violations, log_in, look, size, until
from tests.daemon_process import HubProcess, add_user
from tests.hub_client import HubClient
from tests.test_hub import PASSWORDS, Hub

TALLY = {"channels": ["counter", "van"],
         "products": {"syringe-1ml": "1ml syringes x10", "foil": "Foil"}}
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def bucket(tally_id: str, channel: str = "van", counts: dict | None = None, version: int = 1,
           start: datetime = HOUR, **changes: object) -> dict:
    body = {"id": tally_id, "channel": channel, "start": iso(start),
            "end": iso(start + timedelta(hours=1)), "counts": counts or {"syringe-1ml": 2},
            "version": version}
    return {**body, **changes}


def channel_totals(client) -> dict[tuple[str, str], int]:
    """``(channel, product) -> confirmed`` from the usage CSV, over all time."""
    out: dict[tuple[str, str], int] = {}
    for row in client.csv("/reports/usage.csv?from=2000-01-01&to=2100-01-01"):
        key = (row["channel"], row["product"])
        out[key] = out.get(key, 0) + int(row["confirmed"])
    return out


# -- the store: the latest counts of a bucket, whatever the network does ---------------------
class TallySends(RuleBasedStateMachine):
    """A page's buckets change (taps, takings back), and each change is sent; the network
    delivers the sends late, twice, out of order or never. The store always holds, for each
    bucket, the counts of the newest send it got; once the newest of each is delivered, the
    store's totals are the page's."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="nspvend-tally-")
        self.store = SqliteStore(Path(self.folder) / "hub.db")
        self.page: dict[str, dict] = {}  # id -> {"counts": {...}, "version": n}
        self.in_flight: list[Tally] = []
        self.newest_arrived: dict[str, Tally] = {}

    @rule(which=st.integers(0, 3), product=st.sampled_from(["syringe-1ml", "foil"]),
          taps=st.integers(-2, 3))
    def tap(self, which: int, product: str, taps: int) -> None:
        b = self.page.setdefault(f"bucket-{which:04d}", {"counts": {}, "version": 0})
        now = b["counts"].get(product, 0)
        b["counts"][product] = max(0, now + taps)  # -1 never below nothing
        b["version"] += 1
        tally_id = f"bucket-{which:04d}"
        self.in_flight.append(Tally(tally_id, "van", "2026-12-01T14:00:00Z",
                                    "2026-12-01T15:00:00Z", dict(b["counts"]), b["version"]))

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 100), again=st.booleans())
    def deliver(self, pick: int, again: bool) -> None:
        tally = self.in_flight[pick % len(self.in_flight)]
        if not again:
            self.in_flight.remove(tally)
        outcome = self.store.tallies.record(tally, "sam")
        had = self.newest_arrived.get(tally.id)
        if had is None or tally.version > had.version:
            assert outcome in ("new", "updated")
            self.newest_arrived[tally.id] = tally
        else:
            assert outcome == "same"

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 100))
    def lose(self, pick: int) -> None:
        self.in_flight.pop(pick % len(self.in_flight))

    @invariant()
    def the_store_holds_the_newest_send_it_got(self) -> None:
        rows, buckets = self.store.tallies.totals("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")
        expected: dict[str, int] = {}
        for tally in self.newest_arrived.values():
            for product, n in tally.counts.items():
                if n:
                    expected[product] = expected.get(product, 0) + n
        assert {p: n for _, p, n in rows} == expected
        assert buckets == ({"van": len(self.newest_arrived)} if self.newest_arrived else {})

    def teardown(self) -> None:
        # the page sends what the hub has not got until it has: the newest of each bucket
        for tally_id, b in self.page.items():
            self.store.tallies.record(Tally(tally_id, "van", "2026-12-01T14:00:00Z",
                                          "2026-12-01T15:00:00Z", dict(b["counts"]),
                                          b["version"]), "sam")
        rows, _ = self.store.tallies.totals("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")
        page: dict[str, int] = {}
        for b in self.page.values():
            for product, n in b["counts"].items():
                if n:
                    page[product] = page.get(product, 0) + n
        assert {p: n for _, p, n in rows} == page
        self.store.close()


TallySends.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_a_bucket_counts_once_whatever_the_network_does = TallySends.TestCase


def test_the_store_keeps_no_time_finer_than_the_hour(tmp_path):
    store = SqliteStore(tmp_path / "hub.db")
    store.tallies.record(Tally("tally-0001", "van", "2026-12-01T14:00:00Z", "2026-12-01T15:00:00Z",
                             {"foil": 1}, 1), "sam")
    store.tallies.record(Tally("tally-0001", "van", "2026-12-01T14:00:00Z", "2026-12-01T15:00:00Z",
                             {"foil": 2}, 2), "sam")
    store.close()
    db = sqlite3.connect(tmp_path / "hub.db")
    columns = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")]
               for t in ("tallies", "tally_counts")}
    assert columns == {"tallies": ["id", "channel", "start", "end", "user", "version"],
                       "tally_counts": ["tally_id", "product", "count"]}
    assert db.execute('SELECT start, "end" FROM tallies').fetchall() == [
        ("2026-12-01T14:00:00Z", "2026-12-01T15:00:00Z")]
    assert db.execute("SELECT product, count FROM tally_counts").fetchall() == [("foil", 2)]


# -- POST /tally ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = Hub(tmp_path_factory.mktemp("tally"), tally=TALLY)
    add_user(h.config, "kim", "staff", "staff password 2")
    yield h
    h.close()


def test_staff_tally_a_viewer_may_not_and_a_stranger_is_asked_to_log_in(hub):
    sam, val = hub.client("sam"), hub.client("val")
    status, answer = sam.post_json("/tally", {"buckets": [bucket("staff-0001")]})
    assert status == 200 and answer == {"ok": True, "buckets": [
        {"id": "staff-0001", "ok": True, "outcome": "new"}]}
    status, answer = sam.post_json("/tally", {"buckets": [bucket("staff-0001")]})
    assert answer["buckets"][0]["outcome"] == "same"  # a resend: counted once
    status, answer = val.post_json("/tally", {"buckets": [bucket("viewer-0001")]})
    assert status == 403
    status, _, page = val.get("/tally")
    assert status == 200 and "Only staff may tally" in page and "tally.js" not in page
    stranger = HubClient(f"http://127.0.0.1:{hub.web_port}")
    status, answer = stranger.post_json("/tally", {"buckets": [bucket("stranger-01")]})
    assert status == 401
    assert channel_totals(sam).get(("van", "syringe-1ml")) == 2


def test_a_bad_bucket_is_refused_naming_its_field_and_changes_nothing(hub):
    sam = hub.client("sam")
    before = channel_totals(sam)
    # more than the 65 min a fast phone is allowed, whatever the minute now
    future = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=3)
    bad = {
        "buckets[0].channel: must be one of counter, van": bucket("bad-00001", channel="bus"),
        "buckets[0].start: must be the start of an hour": bucket(
            "bad-00002", start=HOUR + timedelta(minutes=17)),
        "buckets[0].end: must be an hour after start": bucket("bad-00003", end=iso(HOUR)),
        "buckets[0].start: is ahead of the hub's clock": bucket("bad-00004", start=future),
        "buckets[0].counts.foil: must be a whole number from 0 to 1000": bucket(
            "bad-00005", counts={"foil": -1}),
        "buckets[0].counts.Foil!: must be a product id": bucket("bad-00006",
                                                                counts={"Foil!": 1}),
        "buckets[0].counts.citric: is not a product the tally offers": bucket(
            "bad-00010", counts={"citric": 1}),
        "buckets[0].start: is more than 90 days ago": bucket(
            "bad-00011", start=HOUR - timedelta(days=91)),
        "buckets[0].start: must be the start of an hour in UTC": bucket(
            "bad-00012", start=datetime(2019, 1, 1, tzinfo=UTC)),
        "buckets[0].id: must be 8 to 64 letters": bucket("short"),
        "buckets[0].version: must be a whole number from 1": bucket("bad-00007", version=0),
        "buckets[0].when: is not part of a tally bucket": bucket("bad-00008", when="14:37"),
    }
    for error, body in bad.items():
        status, answer = sam.post_json("/tally", {"buckets": [body]})
        assert status == 200 and answer["ok"] is False, answer
        assert answer["buckets"][0]["error"].startswith(error), (error, answer)
    for body, error in (({"buckets": []}, "buckets: must be a list of 1 to 200"),
                        ([], "buckets: must be a list"), ({"buckets": "x"}, "buckets: must be")):
        status, answer = sam.post_json("/tally", body)
        assert status == 400 and answer["error"].startswith(error), answer
    # odd shapes answer in words, never a 500: a far year, a lone surrogate, deep nesting
    status, answer = sam.post_json("/tally", {"buckets": [bucket("far-00001", start=HOUR)
                                                          | {"start": "9999-12-31T23:00:00Z"}]})
    assert status == 200 and "start: must be the start of an hour" in answer["buckets"][0]["error"]
    status, _, text = sam.request("/tally", b'{"buckets": [{"id": "\\udc00", "x\\udc01": 1}]}',
                                  {"Content-Type": "application/json"})
    assert status == 200 and json.loads(text)["buckets"][0]["id"] is None, text
    status, _, text = sam.request("/tally", b"[" * 100_000 + b"]" * 100_000,
                                  {"Content-Type": "application/json"})
    assert status in (400, 413), (status, text[:200])
    # a page left open from another login: the taps are not this person's
    status, answer = sam.post_json("/tally", {"user": "kim", "buckets": [bucket("kims-0001")]})
    assert status == 409 and answer["error"].startswith("user: these taps are"), answer
    status, _, _ = sam.request("/tally", b"buckets=1",
                               {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    # one bad bucket does not stop a good one beside it
    status, answer = sam.post_json("/tally", {"buckets": [bucket("bad-00009", channel="bus"),
                                                          bucket("good-0001", channel="counter",
                                                                 counts={"foil": 1})]})
    assert [b["ok"] for b in answer["buckets"]] == [False, True]
    after = channel_totals(sam)
    assert after == {**before, ("counter", "foil"): before.get(("counter", "foil"), 0) + 1}


def test_a_bucket_is_its_owners_and_who_tallied_is_shown_by_the_hour(hub):
    sam, kim = hub.client("sam"), HubClient(f"http://127.0.0.1:{hub.web_port}")
    kim.login("kim", "staff password 2")
    day_before = HOUR - timedelta(days=1)  # an hour of its own: tallies are by person and hour
    assert sam.post_json("/tally", {"buckets": [bucket("owned-0001", counts={"foil": 3},
                                                       start=day_before)]})[1]["ok"]
    status, answer = kim.post_json("/tally", {"buckets": [bucket("owned-0001", counts={"foil": 9},
                                                                 version=2, start=day_before)]})
    assert answer["buckets"][0]["ok"] is False
    assert answer["buckets"][0]["error"].startswith("buckets[0].id: is another bucket's")
    status, _, page = sam.get("/activity")
    assert status == 200
    local = day_before.astimezone(ZoneInfo("Europe/London"))
    row = (f'<td data-label="When">{local:%a} {local.day} {local:%b}, {local:%H}:00–'
           f'{(local + timedelta(hours=1)):%H}:00</td>\n  <td data-label="Who">sam</td>\n'
           '  <td data-label="What">Tallied 3 packs</td>\n  <td data-label="Where">Van</td>')
    assert row in page, page[-3000:]
    assert "kim" not in page  # the refused send is nobody's tally


# -- in a real browser, on a phone, with no signal -------------------------------------------
@pytest.fixture
def tally_hub(tmp_path):
    h = Hub(tmp_path, tally=TALLY)
    h.base = f"http://127.0.0.1:{h.web_port}"
    yield h
    h.close()


def waiting(driver) -> int:
    return int(driver.find_element("id", "tally-waiting").get_attribute("data-waiting") or 0)


def tap(driver, css: str, product: str) -> None:
    driver.find_element("css selector", f".{css}[data-product='{product}']").click()


@pytest.mark.skipif(not HAVE_BROWSER, reason=NO_BROWSER)
def test_a_phone_with_no_signal_keeps_the_taps_and_sends_them_once_when_it_is_back(
        tally_hub, browser):
    hub = tally_hub
    sam = hub.client("sam")
    size(browser, *PHONE)
    log_in(browser, hub.base, "sam", PASSWORDS["sam"])
    browser.get(hub.base + "/tally")
    seen = look(browser)
    assert seen["scrollWidth"] <= seen["width"] and not seen["small"], seen
    assert axe_violations(browser) == []
    until(browser, lambda d: d.execute_script("return !!navigator.serviceWorker.controller"),
          "the service worker looking after the page")
    # at the counter: the taps wait for their hour to end (the same rule as the machine's)
    tap(browser, "tally-add", "syringe-1ml")
    tap(browser, "tally-add", "syringe-1ml")
    tap(browser, "tally-add", "foil")
    until(browser, lambda d: waiting(d) == 3, "3 taps waiting")
    assert "they go when this hour ends" in browser.find_element("id", "tally-waiting").text
    assert channel_totals(sam) == {}

    # the van, out of signal: taps and a mistake taken back wait, and the page says so
    browser.find_element("css selector", "input[name=channel][value=van]").click()
    browser.set_network_conditions(offline=True, latency=0, download_throughput=-1,
                                   upload_throughput=-1)
    for _ in range(3):
        tap(browser, "tally-add", "syringe-1ml")
    tap(browser, "tally-undo", "syringe-1ml")
    until(browser, lambda d: waiting(d) == 5 and "No connection" in d.find_element(
        "id", "tally-waiting").text, "5 taps waiting with no connection")
    assert "5 taps wait to be sent" in browser.find_element("id", "tally-waiting").text
    assert channel_totals(sam) == {}
    browser.delete_network_conditions()  # back: everything waiting goes at once
    until(browser, lambda d: waiting(d) == 0, "the taps sent when the signal is back")
    assert channel_totals(sam) == {("counter", "syringe-1ml"): 2, ("counter", "foil"): 1,
                                   ("van", "syringe-1ml"): 2}

    # the hub away: the page opens from what the worker kept, keeps the tap, and sends it
    hub.process.terminate()
    tap(browser, "tally-add", "foil")
    until(browser, lambda d: waiting(d) == 1 and "No connection" in d.find_element(
        "id", "tally-waiting").text, "a tap waiting while the hub is away")
    browser.refresh()
    until(browser, lambda d: waiting(d) == 1, "the page, opened with the hub away, still has it")
    assert "Foil" in browser.find_element("css selector", ".tally-products").text
    assert browser.find_element("id", "tally-total").text == "6"
    hub.process = HubProcess(hub.config)
    until(browser, lambda d: waiting(d) == 0, "the tap sent once the hub is back")
    totals = {("counter", "syringe-1ml"): 2, ("counter", "foil"): 1, ("van", "syringe-1ml"): 2,
              ("van", "foil"): 1}
    assert channel_totals(sam) == totals

    # every bucket sent again (a page that lost the hub's answers), and an hour ended and
    # never sent: it goes as the page opens; nothing counts twice
    browser.execute_script("""
        const s = JSON.parse(localStorage.getItem('nspvend-tally'));
        for (const id in s.buckets) { s.buckets[id].sent = {}; }
        s.buckets['t-an-hour-gone-by'] = {id: 't-an-hour-gone-by', user: 'sam', channel: 'van',
            start: arguments[0], end: arguments[1], counts: {foil: 4}, sent: {}, version: 1};
        localStorage.setItem('nspvend-tally', JSON.stringify(s));""",
        iso(HOUR), iso(HOUR + timedelta(hours=1)))
    browser.refresh()
    until(browser, lambda d: channel_totals(sam).get(("van", "foil")) == 5, "the hour gone by")
    assert waiting(browser) == 6  # this hour's: they wait for it to end
    browser.find_element("id", "tally-new-shift").click()  # the shift ends: they go now
    until(browser, lambda d: waiting(d) == 0, "the resend answered")
    assert channel_totals(sam) == {**totals, ("van", "foil"): 5}
    assert browser.find_element("id", "tally-total").text == "0"
    assert browser.find_element("id", "tally-last").text == "The shift before: 6 packs."
    assert not browser.find_element("css selector", ".tally-undo[data-product=foil]").is_enabled()
    kept = json.loads(browser.execute_script("return localStorage.getItem('nspvend-tally')"))
    assert all(set(b) == {"id", "user", "channel", "start", "end", "counts", "sent", "version"}
               for b in kept["buckets"].values())  # no tap's time on the phone either

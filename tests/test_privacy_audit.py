"""The privacy audit: two machines (sim and serial) as real processes against a real broker
and a real hub, a subscriber stamping when each message arrives, presses of every kind,
and the hub polling all along. Then every message, the raw bytes of each database and its
WAL (running and stopped), each daemon's log and the hub's store are read against the rule
(promise 2): what a vend causes is told when the bucket in which it happened closes, with
that bucket's usage, stamped with its end, and at no other moment.

Buckets last :data:`BUCKET_S` seconds here (tests/short_buckets.py; with ``--long``, one
minute, the shortest a machine allows). Presses come in the middle of a bucket, at least
:data:`CLEAR_S` from its ends, so anything told because of a press, rather than because a
bucket closed, lands away from every close and is caught.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from controller.clock import parse_iso
from controller.ledger import VEND_CAUSED
from tests.broker import MOSQUITTO, Subscriber
from tests.daemon_process import BoardProcess, DaemonProcess, ask, dropped, wait_until
from tests.machines import machine_toml
from tests.test_hub import Hub

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

BUCKET_S = 3.0
CLEAR_S = 1.1  # presses land at least this far from a bucket's ends
CLOSE_S = 1.0  # what a close tells arrives within this of its usage message
ISO = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
STAFF = {"refilled"}  # events staff cause, told at once (and the board's, at start)


@pytest.fixture
def bucket_s(request: pytest.FixtureRequest) -> float:
    return 60.0 if request.config.getoption("--long") else BUCKET_S


def config(machine_id: str, hal: str, port: int) -> str:
    hardware = {"serial": {"port": "board.tty"}} if hal == "serial" else {
        "sim": {"control": "sim.sock"}}
    return machine_toml(machine_id, hal, **hardware, database={"path": "nspvend.db"},
                        control={"socket": "control.sock"},
                        mqtt={"host": "127.0.0.1", "port": port, "state_interval_s": 3600})


class Machine:
    """One machine under audit: its daemon, its physical world, and the presses it got."""

    def __init__(self, tmp: Path, port: int, hal: str, bucket_s: float) -> None:
        self.tmp, self.hal, self.id, self.bucket_s = tmp, hal, f"audit-{hal}", bucket_s
        tmp.mkdir()
        self.board = BoardProcess(tmp, turn_ms=40) if hal == "serial" else None
        (tmp / "nspvend.toml").write_text(config(self.id, hal, port))
        self.world = tmp / "sim.sock"
        self.daemon = DaemonProcess(tmp / "nspvend.toml", bucket_s=bucket_s)
        self.staff_from = time.time()
        for slot, count in ((1, 20), (2, 20), (3, 3)):  # staff load, and count what they loaded
            self.physical({"op": "load", "slot": slot, "count": count})
            assert ask(tmp / "control.sock", {"id": f"load-{slot}", "cmd": "refill",
                                              "slot": slot, "count": count})["ok"]
        self.presses: list[float] = []

    def physical(self, request: dict) -> None:
        answer = self.board.ask(request) if self.board else ask(self.world, request)
        assert answer["ok"], answer

    def press(self, button: int) -> None:
        """Press ``button`` in the middle of a bucket, well clear of its ends."""
        with sqlite3.connect(f"file:{self.tmp / 'nspvend.db'}?mode=ro", uri=True) as db:
            [(end,)] = db.execute("SELECT planned_end FROM buckets WHERE end IS NULL")
        phase = parse_iso(end).timestamp()  # buckets follow each other from there
        while True:
            now = time.time()
            into = (now - phase) % self.bucket_s
            if CLEAR_S <= into <= self.bucket_s - CLEAR_S and (
                    not self.presses or now - self.presses[-1] >= 1.0):
                break
            time.sleep(0.02)
        before = dropped(self.tmp)  # the world's socket, the board's or the simulator's
        self.presses.append(time.time())
        self.physical({"op": "press", "button": button})
        wait_until(lambda: dropped(self.tmp) == before + 1, "the press's pack (every press here "
                   "drops one)", timeout=10, every=0.01)

    def life(self) -> None:
        """Everything a client can cause: a slot low, then empty, a slot counted empty that
        still vends, a blind drop sensor, a jam."""
        self.press(1)  # a plain vend
        self.press(2)  # foil 3 -> 2: low
        self.press(2)  # 2 -> 1
        self.press(2)  # 1 -> 0: empty
        self.physical({"op": "load", "slot": 3, "count": 3})  # by hand, untold
        for _ in range(2):  # a slot counted empty keeps vending: said once
            self.press(2)
        self.physical({"op": "fault", "kind": "sensor_stuck"})
        for _ in range(2):  # a blind drop sensor: said once
            self.press(1)
        self.physical({"op": "fault", "kind": "clear"})
        # syringes: slot 1 served the first press and the second blind one: slot 2 is fullest
        self.physical({"op": "fault", "kind": "jam", "slot": 2})
        self.press(1)  # slot 2 jams, slot 1 serves

    def files(self) -> bytes:
        return b"".join(p.read_bytes() for p in (self.tmp / "nspvend.db",
                                                  self.tmp / "nspvend.db-wal") if p.exists())

    def stop(self) -> None:
        if self.daemon.proc.poll() is None:
            assert self.daemon.terminate() == 0
        if self.board:
            self.board.stop()


def test_what_a_press_causes_is_told_only_when_its_bucket_closes(tmp_path, bucket_s):
    hub = Hub(tmp_path, machines=("audit-sim", "audit-serial"))  # a broker and the hub
    sub = Subscriber(hub.broker.port, client_id="audit-watch")
    machines = [Machine(tmp_path / hal, hub.broker.port, hal, bucket_s)
                for hal in ("sim", "serial")]
    polls = {"stop": False, "sent": 0}

    def poll() -> None:  # the hub asks for usage and status every second, all along
        while not polls["stop"]:
            for m in machines:
                for cmd in ("status", "usage"):
                    polls["sent"] += 1
                    sub.publish(f"nspvend/{m.id}/cmd",
                                json.dumps({"id": f"p{polls['sent']}", "cmd": cmd}))
            time.sleep(1.0)

    poller = threading.Thread(target=poll, daemon=True)
    lives = [threading.Thread(target=m.life) for m in machines]
    try:
        poller.start()
        for life in lives:  # both machines at once, each pressed clear of its own closes
            life.start()
        for life in lives:
            life.join(30 * bucket_s)
        assert not any(life.is_alive() for life in lives)
        for m in machines:  # a bucket closed after the last press, on both
            sub.wait_for(lambda msgs, m=m: any(
                parse_iso(u["end"]).timestamp() > m.presses[-1]
                for u in payloads(sub, m.id, "usage")), timeout=bucket_s + 30)
        time.sleep(0.5)  # what that close told, behind its usage (nothing else to wait on)
        running = {m.id: m.files() for m in machines}
    finally:
        polls["stop"] = True
        for m in machines:
            m.stop()
        sub.close()
        hub.close()

    with sub.cond:
        messages = list(zip(sub.arrivals, sub.messages, strict=True))
    store = sqlite3.connect(tmp_path / "hub.db")
    for m in machines:
        audit(m, messages, running[m.id], store)


def audit(m: Machine, messages: list, running: bytes, store: sqlite3.Connection) -> None:
    """Everything the hub heard from ``m``, its files, its log and the hub's store."""
    mine = [(a, t, json_or_raw(p)) for a, (t, p, _) in messages
            if t.startswith(f"nspvend/{m.id}/")]
    closes = [(a, p["end"]) for a, t, p in mine if t.endswith("/usage")]
    ends = {end for _, end in closes}
    boundaries = {parse_iso(b[k]).timestamp() for _, t, b in mine if t.endswith("/usage")
                  for k in ("start", "end")}
    first_press = min(m.presses)
    assert closes and len(m.presses) == 9

    def told_at_close(arrival: float, ts: str) -> bool:
        """``arrival`` within CLOSE_S after a usage message ending at ``ts``."""
        return any(end == ts and -0.2 <= arrival - a <= CLOSE_S for a, end in closes)

    # 1. the wire: every event a vend causes, and every state or stock that says something
    #    new once the presses began, came with a bucket's usage and carries that bucket's end
    before: dict[str, object] = {}
    for arrival, topic, payload in mine:
        leaf = topic.removeprefix(f"nspvend/{m.id}/")
        if leaf == "event" and payload["type"] not in STAFF and arrival > first_press:
            assert payload["type"] in VEND_CAUSED, payload
            assert told_at_close(arrival, payload["ts"]), (m.id, payload)
        if leaf in ("state", "stock"):
            content = news(payload)
            if arrival > first_press and before.get(leaf) != content:
                assert told_at_close(arrival, payload["ts"]), (
                    f"{m.id}: a new {leaf} not told at a bucket's close: {payload}")
            before[leaf] = content
    # 2. the answers to the polls: what was published, closed buckets only
    last_stock = None
    for _, topic, payload in mine:
        if topic.endswith("/stock"):
            last_stock = payload
        if not topic.endswith("/cmd/result"):
            continue
        answer = payload["result"]
        if "buckets" in answer:
            assert all(b["end"] is not None for b in answer["buckets"]), answer
        else:
            assert set(answer) == {"state", "stock", "hub_open"}
            assert strip_ts(answer["stock"]) == strip_ts(last_stock), m.id
    # 3. all of it was told: each condition once, however often it repeated
    events = [p for _, t, p in mine if t.endswith("/event")]
    types = [e["type"] for e in events]
    for kind in ("low_stock", "empty", "stock_mismatch", "unconfirmed_vend", "sensor_fault",
                 "jam"):
        assert types.count(kind) == 1, (m.id, kind, types)
    assert len(types) == len({e["id"] for e in events})
    # 4. no time in the file or its WAL, running or stopped, but the buckets' bounds and
    #    staff's (before the first press: their refills; a day on: when their ids go)
    last_end = max(boundaries)
    for label, data in (("running", running), ("stopped", m.files())):
        for raw in set(ISO.findall(data)):
            moment = parse_iso(raw.decode()).timestamp()
            explained = (moment in boundaries or moment < first_press
                         or m.staff_from - 1 <= moment - 86400 < first_press
                         or last_end < moment <= last_end + m.bucket_s)  # the open bucket
            assert explained, f"{m.id} ({label}): {raw.decode()} is neither a bucket's nor staff's"
    # 5. the daemon's log: once the presses began, a line only as a bucket closes
    for arrival, line in zip(m.daemon.arrivals, m.daemon.log, strict=True):
        if first_press < arrival < last_end:
            assert any(abs(arrival - a) <= CLOSE_S for a, _ in closes), (
                f"{m.id}: logged between closes: {line}")
    # 6. the hub's store: what a vend caused is kept at its bucket's end, not at its arrival
    rows = store.execute("SELECT type, ts, received FROM events WHERE machine = ?",
                         (m.id,)).fetchall()
    caused = [(kind, ts, received) for kind, ts, received in rows if kind in VEND_CAUSED]
    assert {kind for kind, _, _ in caused} >= {"jam", "empty", "sensor_fault"}
    for kind, ts, received in caused:
        assert ts in ends and received == ts, (m.id, kind, ts, received)
    alerts = [(kind, raised, cleared) for kind, raised, cleared in store.execute(
        "SELECT type, raised, cleared FROM alerts WHERE machine = ? AND type != 'offline'",
        (m.id,)) if parse_iso(raised).timestamp() > first_press]  # not the empty slots at start
    assert {kind for kind, _, _ in alerts} >= {"jam", "empty"}, alerts
    for kind, raised, cleared in alerts:
        assert raised in ends and cleared in (None, *ends), (m.id, kind, raised, cleared)


def test_a_kill_between_the_press_and_the_close_loses_nothing_it_caused(tmp_path):
    hub = Hub(tmp_path)
    sub = Subscriber(hub.broker.port, client_id="audit-watch")
    m = Machine(tmp_path / "sim", hub.broker.port, "sim", 30.0)
    try:
        m.physical({"op": "fault", "kind": "jam", "slot": 1})
        m.physical({"op": "load", "slot": 3, "count": 1})
        assert ask(m.tmp / "control.sock", {"id": "r", "cmd": "refill", "slot": 3,
                                           "count": 1})["ok"]
        m.press(1)  # slot 1 jams (slot 2 is as full; the lower number is tried first)
        m.press(2)  # foil 1 -> 0: empty
        m.physical({"op": "fault", "kind": "sensor_stuck"})
        m.press(1)  # blind
        ask(m.tmp / "control.sock", {"id": "sync", "cmd": "stock"})  # all three counted
        closes = len(payloads(sub, m.id, "usage"))
        m.daemon.kill()  # kill -9, well before the bucket's close
        assert len(payloads(sub, m.id, "usage")) == closes  # nothing was told
        m.daemon = DaemonProcess(m.tmp / "nspvend.toml", bucket_s=30.0)
        sub.wait_for(lambda msgs: {"jam", "empty", "sensor_fault", "unconfirmed_vend"} <= {
            e["type"] for e in payloads(sub, m.id, "event")})
    finally:
        m.stop()
        sub.close()
        hub.close()
    caused = [e for e in payloads(sub, m.id, "event") if e["type"] not in STAFF]
    assert sorted(e["type"] for e in caused) == ["empty", "jam", "sensor_fault",
                                                 "unconfirmed_vend"]
    [end] = {e["ts"] for e in caused}  # all told with the bucket the kill left open
    [stale] = [u for u in payloads(sub, m.id, "usage") if u["end"] == end and u["start"] < end]
    assert stale["counts"] == {"syringe-1ml": 1, "foil": 1}
    assert stale["unconfirmed"] == {"syringe-1ml": 1, "foil": 0}


def payloads(sub: Subscriber, machine: str, leaf: str) -> list[dict]:
    with sub.cond:
        return [json.loads(p) for t, p, _ in sub.messages if t == f"nspvend/{machine}/{leaf}"]


def json_or_raw(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def news(body: object) -> object:
    """What a message says, less what changes with every sending (ts, uptime_s)."""
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k not in ("ts", "uptime_s")}
    return body


def strip_ts(stock: dict | None) -> dict | None:
    return None if stock is None else {k: v for k, v in stock.items() if k != "ts"}

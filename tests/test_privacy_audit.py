"""The privacy audit: two machines (sim and serial) as real processes against a real broker,
a subscriber stamping when each message arrives, presses of every kind, staff and the hub
polling. Then every message, the raw bytes of each database and its WAL (running and
stopped) and each daemon's log are read: nothing may land within seconds of a press.

Buckets are one minute here and what a press causes is held 2..4 s (60..600 s on a machine);
presses come 5 s apart, so whatever a press causes lands before the next one, and
"within seconds" means within 1.5 s of a press. A bucket closing on its own schedule is the
one thing new allowed to follow a press closely, as it follows every moment.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from controller.clock import parse_iso
from controller.ledger import VEND_CAUSED
from tests.broker import MOSQUITTO, Broker, Subscriber
from tests.daemon_process import BoardProcess, DaemonProcess, ask
from tests.machines import machine_toml

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

LEAK_S = 1.5  # nothing a press causes may arrive sooner than this (the held delay is 2..4 s)
ROUND_S = 5.0  # between presses: longer than the longest hold
ISO = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")



def config(machine_id: str, hal: str, port: int) -> str:
    hardware = {"serial": {"port": "board.tty"}} if hal == "serial" else {
        "sim": {"control": "sim.sock"}}
    return machine_toml(machine_id, hal, **hardware, database={"path": "nspvend.db"},
                        control={"socket": "control.sock"},
                        mqtt={"host": "127.0.0.1", "port": port, "state_interval_s": 3600},
                        usage={"bucket_minutes": 1},
                        privacy={"event_delay_s": [2, 4], "event_round_s": 60})


class Machine:
    """One machine under audit: its daemon, its physical world, and the presses it got."""

    def __init__(self, tmp: Path, port: int, hal: str) -> None:
        self.tmp, self.hal, self.id = tmp, hal, f"audit-{hal}"
        tmp.mkdir()
        self.board = BoardProcess(tmp, turn_ms=40) if hal == "serial" else None
        (tmp / "nspvend.toml").write_text(config(self.id, hal, port))
        self.world = tmp / "sim.sock"
        self.daemon = DaemonProcess(tmp / "nspvend.toml")
        for slot, count in ((1, 20), (2, 20), (3, 3)):  # staff load, and count what they loaded
            self.physical({"op": "load", "slot": slot, "count": count})
            assert ask(tmp / "control.sock", {"id": f"load-{slot}", "cmd": "refill",
                                              "slot": slot, "count": count})["ok"]
        self.presses: list[float] = []

    def physical(self, request: dict) -> None:
        answer = self.board.ask(request) if self.board else ask(self.world, request)
        assert answer["ok"], answer

    def press(self, button: int) -> None:
        self.presses.append(time.time())
        self.physical({"op": "press", "button": button})

    def files(self) -> bytes:
        return b"".join(p.read_bytes() for p in (self.tmp / "nspvend.db",
                                                  self.tmp / "nspvend.db-wal") if p.exists())

    def stop(self) -> None:
        if self.daemon.proc.poll() is None:
            assert self.daemon.terminate() == 0
        if self.board:
            self.board.stop()


def client_life(machines: list[Machine]) -> None:
    """Everything a client can cause, on both machines at once."""

    def both(action, pause: float = ROUND_S) -> None:
        for m in machines:
            action(m)
        time.sleep(pause)

    both(lambda m: m.press(1))  # a plain vend
    both(lambda m: m.press(2))  # foil 3 -> 2: low
    both(lambda m: m.press(2))  # 2 -> 1
    both(lambda m: m.press(2))  # 1 -> 0: empty
    both(lambda m: m.physical({"op": "load", "slot": 3, "count": 3}), 0.3)  # by hand, untold
    for _ in range(2):  # a slot counted empty keeps vending: said once
        both(lambda m: m.press(2))
    both(lambda m: m.physical({"op": "fault", "kind": "sensor_stuck"}), 0.3)
    for _ in range(2):  # a blind drop sensor: said once
        both(lambda m: m.press(1))
    both(lambda m: m.physical({"op": "fault", "kind": "clear"}), 0.3)
    # syringes: slot 1 served the first press and the second blind one, so slot 2 is fullest
    both(lambda m: m.physical({"op": "fault", "kind": "jam", "slot": 2}), 0.3)
    both(lambda m: m.press(1))  # slot 2 jams, slot 1 serves


def test_no_message_record_or_log_line_times_a_press(tmp_path):
    broker = Broker(tmp_path / "broker")
    hub = Subscriber(broker.port, client_id="audit-hub")
    machines = [Machine(tmp_path / hal, broker.port, hal) for hal in ("sim", "serial")]
    polls = {"stop": False, "sent": 0}

    def poll() -> None:  # the hub asks for usage and status every second, all along
        while not polls["stop"]:
            for m in machines:
                for cmd in ("status", "usage"):
                    polls["sent"] += 1
                    hub.publish(f"nspvend/{m.id}/cmd",
                                json.dumps({"id": f"p{polls['sent']}", "cmd": cmd}))
            time.sleep(1.0)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        for m in machines:
            hub.wait_for(lambda msgs, m=m: any(t == f"nspvend/{m.id}/availability" and p == b"online"
                                              for t, p, _ in msgs))
        poller.start()
        client_life(machines)
        last_press = max(p for m in machines for p in m.presses)
        # every hold released (4 s) and a bucket closed after the last press, on both
        for m in machines:
            hub.wait_for(lambda msgs, m=m: any(
                parse_iso(u["end"]).timestamp() > last_press + 5
                for u in payloads(hub, m.id, "usage")), timeout=90)
        running = {m.id: m.files() for m in machines}
    finally:
        polls["stop"] = True
        for m in machines:
            m.stop()
        hub.close()
        broker.kill()

    with hub.cond:
        messages = list(zip(hub.arrivals, hub.messages, strict=True))
    for m in machines:
        audit(m, messages, payloads(hub, m.id, "usage"), payloads(hub, m.id, "event"),
              running[m.id])


def audit(m: Machine, messages: list, buckets: list[dict], events: list[dict],
          running: bytes) -> None:
    """Everything the hub heard from ``m``, its files and its log, against its presses."""
    mine = [(a, t, p) for a, (t, p, _) in messages if t.startswith(f"nspvend/{m.id}/")]
    boundaries = {parse_iso(u[k]).timestamp() for u in buckets for k in ("start", "end")}
    assert len(buckets) >= 2 and m.presses

    def near_a_press(moment: float) -> float | None:
        return next((p for p in m.presses if 0 <= moment - p < LEAK_S), None)

    def at_a_bucket_close(moment: float) -> bool:
        return any(0 <= moment - b < 2.5 for b in boundaries)

    # 1. nothing new arrives within seconds of a press: a message then (a status poll
    #    re-publishes state and stock) says what the one before it said, or a bucket closed
    before: dict[str, object] = {}
    for arrival, topic, payload in mine:
        leaf = topic.rsplit("/", 1)[1]
        if topic.endswith("/cmd") or topic.endswith("/cmd/result"):
            continue  # the hub's own polls and their answers: content checked below
        content = news(payload)
        pressed = near_a_press(arrival)
        assert pressed is None or at_a_bucket_close(arrival) or before.get(leaf) == content, (
            f"{m.id}: {leaf} arrived {arrival - pressed:.2f} s after a press: {payload[:300]}")
        before[leaf] = content
    # 2. the answers to the polls: what was published, closed buckets only
    last_stock = None
    for _, topic, payload in mine:
        if topic.endswith("/stock"):
            last_stock = json.loads(payload)
        if not topic.endswith("/cmd/result"):
            continue
        answer = json.loads(payload)["result"]
        if "buckets" in answer:
            assert all(b["end"] is not None for b in answer["buckets"]), answer
        else:
            assert set(answer) == {"state", "stock", "hub_open"}
            assert strip_ts(answer["stock"]) == strip_ts(last_stock), m.id
    # 3. conditions that repeat are said once; the stamps of what presses caused are rounded
    types = [e["type"] for e in events]
    for kind in ("stock_mismatch", "unconfirmed_vend", "sensor_fault", "jam"):
        assert types.count(kind) == 1, (m.id, kind, types)
    assert len(types) == len({e["id"] for e in events})
    for e in events:
        if e["type"] in VEND_CAUSED:
            assert e["ts"].endswith(":00Z"), (m.id, e)
    # 4. no time in the file or its WAL, running or stopped, sits near a press
    staff_until = min(m.presses)
    stopped_at = max(boundaries)
    for label, data in (("running", running), ("stopped", m.files())):
        for raw in set(ISO.findall(data)):
            moment = parse_iso(raw.decode()).timestamp()
            if moment in boundaries or raw.endswith(b":00Z"):
                continue
            if moment < staff_until or moment - 86400 < staff_until:
                continue  # staff's refills, and when the machine may forget their ids
            assert near_a_press(moment) is None and near_a_press(moment + 1) is None, (
                f"{m.id} ({label}): {raw.decode()} is near a press")
            assert abs(moment - stopped_at) < LEAK_S, f"{m.id} ({label}): unexplained {raw!r}"
    # 5. the daemon's log has no line within seconds of a press
    for arrival, line in zip(m.daemon.arrivals, m.daemon.log, strict=True):
        pressed = near_a_press(arrival)
        assert pressed is None, f"{m.id}: logged {arrival - pressed:.2f} s after a press: {line}"


def payloads(hub: Subscriber, machine: str, leaf: str) -> list[dict]:
    with hub.cond:
        return [json.loads(p) for t, p, _ in hub.messages if t == f"nspvend/{machine}/{leaf}"]


def news(payload: bytes) -> object:
    """What a message says, less what changes with every sending (ts, uptime_s)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("ts", "uptime_s")}
    return body


def strip_ts(stock: dict | None) -> dict | None:
    return None if stock is None else {k: v for k, v in stock.items() if k != "ts"}


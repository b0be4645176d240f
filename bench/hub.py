"""The hub's figures: how fast it stores what machines send, and how long its pages take.

    .venv/bin/python bench/hub.py [--quick]      (scripts/bench runs it after bench/run.py)

1. Ingest: 50 simulated machines (paho publishers speaking the contract) send usage buckets
   through a local mosquitto into the hub as a process; messages stored per second, and the
   lag from publish to stored (p50/p99).
2. Pages: a hub whose store holds a year of hourly buckets from 50 machines (written
   straight into the store, as the listener would); the fleet board, a year's report and a
   year's CSV, timed over HTTP with a logged-in client.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from controller.messages import StateMessage, StockMessage, UsageMessage  # noqa: E402
from hub.store import SqliteStore  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.daemon_process import HubProcess  # noqa: E402
from tests.hub_client import HubClient  # noqa: E402
from tests.machines import known, to_toml  # noqa: E402
from tests.test_hub import free_port, hub_cli  # noqa: E402

MACHINES = 50
PRODUCTS = ("syringe-1ml", "foil", "citric", "naloxone")
PASSWORD = "bench password"


def hub_folder(broker_port: int) -> tuple[Path, int, Path]:
    folder = Path(tempfile.mkdtemp(prefix="nspvend-bench-hub-"))
    web = free_port()
    config = folder / "hub.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": broker_port},
                               "machines": known(*(f"bench-m{m:02d}" for m in range(MACHINES))),
                               "database": {"path": "hub.db"},
                               "web": {"listen": f"127.0.0.1:{web}"}}))
    assert hub_cli(config, "user", "add", "bench", "--role", "viewer",
                   stdin=PASSWORD + "\n").returncode == 0
    return folder, web, config


def bucket(machine: int, start: datetime) -> UsageMessage:
    counts = {p: (machine + start.hour + i) % 4 for i, p in enumerate(PRODUCTS)}
    return UsageMessage(id=uuid.uuid4().hex, start=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        end=(start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        counts=counts, unconfirmed=dict.fromkeys(PRODUCTS, 0), clock_synced=True)


def ingest(messages: int) -> dict:
    # the broker as examples/mosquitto/nspvend.conf sets it: room to hold a backlog for the hub
    broker = Broker(Path(tempfile.mkdtemp(prefix="nspvend-bench-broker-")),
                    extra="max_queued_messages 100000\nmax_inflight_messages 200\n")
    folder, _, config = hub_folder(broker.port)
    hub = HubProcess(config)
    per_machine = messages // MACHINES
    sent_at: dict[str, float] = {}
    clients = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        for m in range(MACHINES):
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-m{m:02d}")
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            clients.append(client)
        t0 = time.perf_counter()

        def machine(m: int) -> None:
            for i in range(per_machine):
                u = bucket(m, start + timedelta(hours=i))
                sent_at[u.id] = time.time()
                clients[m].publish(f"nspvend/bench-m{m:02d}/usage", u.encode(), qos=1)

        threads = [threading.Thread(target=machine, args=(m,)) for m in range(MACHINES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = per_machine * MACHINES
        db = sqlite3.connect(folder / "hub.db")
        while db.execute("SELECT count(*) FROM buckets").fetchone()[0] < total:
            time.sleep(0.05)
            if time.perf_counter() - t0 > 300:
                break
        elapsed = time.perf_counter() - t0
        stored = dict(db.execute("SELECT id, received FROM buckets").fetchall())
        lags = sorted(_seconds(stored[i]) - sent_at[i] for i in sent_at if i in stored)
        db.close()
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        hub.terminate()
        broker.kill()
    return {"messages": len(stored), "rate": len(stored) / elapsed,
            "lag_p50": statistics.median(lags), "lag_p99": lags[int(len(lags) * 0.99) - 1]}


def _seconds(iso: str) -> float:
    # stored to the second: the lag is known to +-1 s, enough to see a backlog
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() + 0.5


def pages(days: int) -> dict:
    broker = Broker(Path(tempfile.mkdtemp(prefix="nspvend-bench-broker-")))
    folder, web, config = hub_folder(broker.port)
    store = SqliteStore(folder / "hub.db")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = now - timedelta(days=days)
    t = time.perf_counter()
    heard = now
    for m in range(MACHINES):
        machine = f"bench-m{m:02d}"
        with store.transaction():
            store.fleet.heard(machine, heard)
            store.fleet.record_availability(machine, "online", heard)
            store.fleet.record_state(machine, StateMessage(
                mode="in_service", door="closed", sharps_bin="ok", temperature_c=12.0, faults=(),
                version="bench", uptime_s=1, clock_synced=True,
                ts=now.strftime("%Y-%m-%dT%H:%M:%SZ")), heard)
            store.fleet.record_stock(machine, StockMessage.read({
                "schema": 1, "ts": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "slots": [{"slot": i + 1, "product": p, "count": 10, "capacity": 30,
                           "low_at": 5, "status": "ok"} for i, p in enumerate(PRODUCTS)],
                "products": {p: {"count": 10, "status": "ok"} for p in PRODUCTS}}), heard)
            hour = first
            while hour < now:
                store.usage.record_usage(machine, bucket(m, hour), heard)
                hour += timedelta(hours=1)
    buckets = store.db.x("SELECT count(*) FROM buckets").fetchone()[0]
    store.close()
    fill_s = time.perf_counter() - t
    hub = HubProcess(config)
    try:
        client = HubClient(f"http://127.0.0.1:{web}")
        client.login("bench", PASSWORD)
        year = (now - timedelta(days=365)).date()

        timed = client.median_get
        figures = {"fleet": timed("/"), "api": timed("/api/machines"),
                   "report_year": timed("/reports?by=year", 3),
                   "report_month": timed("/reports?by=month", 3),
                   "csv_year": timed(f"/reports/usage.csv?from={year}&to={now.date() + timedelta(1)}",
                                     3),
                   "buckets": buckets, "fill_s": fill_s,
                   "db_mb": os.path.getsize(folder / "hub.db") / 1e6}
    finally:
        hub.terminate()
        broker.kill()
    return figures


def login_flood(flooders: int = 6, seconds: float = 8.0) -> dict:
    """/api/machines while ``flooders`` clients send wrong passwords as fast as they can, each
    from its own address behind a trusted proxy (so no slowdown spares the password check):
    the checks run in their own threads, the page should hardly notice."""
    broker = Broker(Path(tempfile.mkdtemp(prefix="nspvend-bench-broker-")))
    folder, web, config = hub_folder(broker.port)
    text = config.read_text().replace("[web]\n", '[web]\ntrusted_proxies = ["127.0.0.1"]\n')
    config.write_text(text)
    hub = HubProcess(config)
    base = f"http://127.0.0.1:{web}"
    try:
        viewer = HubClient(base)
        viewer.login("bench", PASSWORD)
        quiet = viewer.median_get("/api/machines", 9)
        stop = threading.Event()
        tried = [0]

        def flood(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                c = HubClient(base)
                c.headers = {"X-Forwarded-For": f"198.18.{n}.{i % 250}"}
                c.login(f"nobody-{n}-{i}", "a wrong password")
                tried[0] += 1

        threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(flooders)]
        for t in threads:
            t.start()
        time.sleep(1)
        flooded = viewer.median_get("/api/machines", 15)
        time.sleep(max(0.0, seconds - 3))
        stop.set()
        for t in threads:
            t.join(30)
        return {"quiet": quiet, "flooded": flooded, "tried": tried[0], "seconds": seconds,
                "flooders": flooders}
    finally:
        hub.terminate()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, 60 days of data")
    args = parser.parse_args()
    i = ingest(5000 if args.quick else 20000)
    p = pages(60 if args.quick else 365)
    f = login_flood()
    print()
    print(f"nspvend hub bench on {os.uname().nodename} ({os.cpu_count()} CPUs), "
          f"{time.strftime('%Y-%m-%d')}")
    print()
    print(f"| {'figure':<58} | {'value':>14} |")
    print(f"|{'-' * 60}|{'-' * 16}|")
    rows = [
        (f"usage messages stored per second ({MACHINES} machines, local broker)",
         f"{i['rate']:.0f} msg/s"),
        ("lag from publish to stored, p50", f"{i['lag_p50']:.1f} s"),
        ("lag from publish to stored, p99", f"{i['lag_p99']:.1f} s"),
        (f"fleet board, {MACHINES} machines", f"{p['fleet'] * 1000:.0f} ms"),
        ("/api/machines", f"{p['api'] * 1000:.0f} ms"),
        ("report by financial year (3 years)", f"{p['report_year'] * 1000:.0f} ms"),
        ("report by month (12 months)", f"{p['report_month'] * 1000:.0f} ms"),
        ("a year's CSV", f"{p['csv_year'] * 1000:.0f} ms"),
        ("/api/machines, quiet", f"{f['quiet'] * 1000:.0f} ms"),
        (f"/api/machines while {f['flooders']} clients send wrong passwords",
         f"{f['flooded'] * 1000:.0f} ms"),
    ]
    for name, value in rows:
        print(f"| {name:<58} | {value:>14} |")
    print()
    print(f"ingest: {i['messages']} buckets; pages: {p['buckets']} hourly buckets "
          f"({MACHINES} machines x {len(PRODUCTS)} products), store {p['db_mb']:.0f} MB, "
          f"written in {p['fill_s']:.0f} s; medians of 3-5 requests; the login flood: "
          f"{f['tried']} wrong passwords in {f['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

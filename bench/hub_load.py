"""The hub at a national fleet's size: where one box stops.

    python3 bench/hub_load.py [--quick] [--machines 100,1000,10000]

(one command from a fresh clone: it runs scripts/setup first and then itself in .venv.)

For N light machines (simulator/fleet.py: paho publishers speaking the contract, sharing 50
MQTT connections), on SQLite and on PostgreSQL (a server of its own, commits durable), with
one and with two hub processes (the second through an MQTT 5 shared subscription), through
one local mosquitto:

- the store is first given a year of daily roll-ups for every machine (what a year of
  hourly buckets leaves behind), so the reports have a year to add up;
- each machine says hello (online, state, stock; one in five is running low of
  everything, so the alerts have a fifth of the fleet raised to keep working out), then
  sends at the rate a machine really does (a state every 5 minutes, each with its own
  uptime, stock and a usage bucket every hour: 14 messages an hour),
  for 20 s, then at 100 times that rate for 20 s; a probe machine sends a bucket each second
  beside them, and the bench watches the store for each one: the lag from publish to stored;
- then a backlog of 20,000 buckets, as after an outage, sent while the hub processes are
  paused (SIGSTOP: the broker keeps it in their sessions), timed from their going on until
  every one has stored all it heard (its /metrics): the most they can store, not how fast
  the bench's own publishers send on the same two CPUs, nor how fast a process starts.
  A drain takes a few seconds: it is done three times, and the middle rate shown;
- then the same for the mix at 100 times the real rate, as much as the live phase sends or
  as many messages as the backlog if that is more ("100x drained"): how fast the hubs
  store that mix without the bench's own publishers sharing the two CPUs with them (they
  cannot send 10,000 machines' mix as it falls due here). Above the rate offered, the hubs
  keep up with it;
- the fleet board (``/``) and a report by financial year over HTTP, logged in, once the hub
  processes are at rest (all they heard stored, nothing new for 2 s) and, on PostgreSQL,
  autovacuum has cleared the drains' dead versions of the machines' rows (within a minute
  or two, as on a live server); their memory (RSS).

Prints a table (markdown) and writes bench/hub_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _in_venv() -> None:
    """From a fresh clone: set up .venv (and mosquitto, PostgreSQL) and run again in it."""
    venv = ROOT / ".venv" / "bin" / "python"
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return
    subprocess.run([str(ROOT / "scripts" / "setup"), "--with-broker"], check=True)
    os.execv(str(venv), [str(venv), __file__, *sys.argv[1:]])


if __name__ == "__main__":
    _in_venv()

sys.path.insert(0, str(ROOT))

from controller.clock import iso  # noqa: E402
from hub.store.schema import V8, V9  # noqa: E402
from simulator.fleet import PRODUCTS, Fleet, bucket, state, stock  # noqa: E402
from tests.broker import Broker  # noqa: E402
from tests.daemon_process import HubProcess  # noqa: E402
from tests.hub_client import HubClient  # noqa: E402
from tests.machines import known, to_toml  # noqa: E402

# the monthly roll-ups the same days leave, and the whole fleet's
ROLLUPS = [statement for statement in V8 + V9 if statement.startswith("INSERT")]
from tests.postgres import WHY_NOT, Postgres  # noqa: E402
from tests.test_hub import free_port, hub_cli  # noqa: E402

PASSWORD = "bench password"
PER_HOUR = 14  # 12 states (every 5 minutes), a stock and a usage bucket
PHASE_S = 20.0
BACKLOG = 20_000
DRAINS = 3  # the backlog is drained this many times, its rate the median
CONNECTIONS = 50


class Store:
    """The bench's own look at the hub's store: seeding it, and watching buckets arrive."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind, self.where = kind, where
        self.lock = threading.Lock()  # the probe's watcher and the bench share the connection
        if kind == "sqlite":
            self.conn = sqlite3.connect(where, isolation_level=None, timeout=60,
                                        check_same_thread=False)
        else:
            import psycopg

            # never a prepared statement's generic plan: the bench looks up a few buckets by
            # their key many times a second while the hubs drain, and the plan PostgreSQL
            # kept for that, made from the statistics of the tables as seeded (no bucket
            # yet), read every bucket: 10-40 ms of the server's CPU a look, as much as the
            # hub's own work while it drained (the look takes 1-2 ms planned each time)
            self.conn = psycopg.connect(where, autocommit=True, prepare_threshold=None)

    def q(self, sql: str, params: tuple = ()) -> list:
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def seed_year(self, ids: list[str], today: date) -> float:
        """A year of daily roll-ups per machine and product, and the monthly and fleet ones
        they make, as the listener leaves them."""
        t = time.perf_counter()
        days = [(today - timedelta(days=d)).isoformat() for d in range(1, 366)]

        def counts():
            for m, machine in enumerate(ids):
                for d, day in enumerate(days):
                    for i, p in enumerate(PRODUCTS):
                        yield machine, day, p, (m + d + i) % 7, 0

        def cover():
            for machine in ids:
                for day in days:
                    yield machine, day, 86400.0, 24

        if self.kind == "sqlite":
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO daily_counts VALUES (?, ?, ?, ?, ?)", counts())
            self.conn.executemany("INSERT INTO daily_cover VALUES (?, ?, ?, ?)", cover())
            for statement in ROLLUPS:
                self.conn.execute(statement)
            self.conn.execute("COMMIT")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with self.conn.cursor() as cur:
                with cur.copy("COPY daily_counts (machine, day, product, confirmed, unconfirmed)"
                              " FROM STDIN") as copy:
                    for row in counts():
                        copy.write_row(row)
                with cur.copy("COPY daily_cover (machine, day, seconds, buckets) FROM STDIN") as copy:
                    for row in cover():
                        copy.write_row(row)
                for statement in ROLLUPS:
                    cur.execute(statement)
            # as a year's rows are on a live server: vacuumed, and on the disk. Else the
            # vacuum of 15 million new rows and the checkpoint writing them out can fall in
            # the phases timed after, whenever PostgreSQL gets to them
            self.conn.execute("VACUUM (FREEZE, ANALYZE)")
            self.conn.execute("CHECKPOINT")
        return time.perf_counter() - t

    def count(self, machine: str | None = None) -> int:
        if machine is None:
            return self.q("SELECT count(*) FROM buckets")[0][0]
        return self.q("SELECT count(*) FROM buckets WHERE machine = ?", (machine,))[0][0]

    def kept(self, ids: list[str]) -> int:
        """How many of the buckets ``ids`` are kept (by their key: the bench asks while the
        hubs drain, and counting every bucket kept would take from them)."""
        marks = ", ".join("?" * len(ids))
        return self.q(f"SELECT count(*) FROM buckets WHERE id IN ({marks})", tuple(ids))[0][0]

    def machines(self) -> int:
        return self.q("SELECT count(*) FROM machines")[0][0]

    def swept(self, timeout: float = 300) -> float:
        """PostgreSQL: wait until autovacuum has cleared the dead versions of the machines'
        rows the phases before left (it looks every minute, as on any live server, and a
        live hub at the real rate has it do so every minute or two); the seconds it took.
        The board reads every machine's row, and past each dead version of it until then."""
        if self.kind != "postgresql":
            return 0.0
        t = time.perf_counter()

        def clear() -> bool:
            (dead, live), = self.q("SELECT n_dead_tup, n_live_tup FROM pg_stat_user_tables"
                                   " WHERE relname = 'machines'")
            working = self.q("SELECT count(*) FROM pg_stat_activity"
                             " WHERE backend_type = 'autovacuum worker'")[0][0]
            return not working and dead <= 0.2 * live + 50  # autovacuum's own threshold

        wait_until(clear, timeout, 0.5)
        return time.perf_counter() - t

    def close(self) -> None:
        self.conn.close()


def wait_until(predicate: Callable[[], object], timeout: float, poll: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None at ``timeout``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate():
            return time.perf_counter() - t0
        time.sleep(poll)
    return None


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Probe:
    """A machine sending a bucket a second; the store is watched for each (50 ms)."""

    def __init__(self, fleet: Fleet, store: Store, machine: str) -> None:
        self.fleet, self.store, self.machine = fleet, store, machine
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._hour = datetime(2020, 1, 1, tzinfo=UTC)
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        while not self._stop.wait(1.0):
            self._hour += timedelta(hours=1)
            u = bucket(self._hour, {"foil": 1})
            self.sent[u.id] = time.perf_counter()
            self.fleet.say(self.machine, u)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            waiting = [i for i in self.sent if i not in self.seen]
            if not waiting:
                continue
            marks = ",".join("?" * len(waiting))
            now = time.perf_counter()
            for (found,) in self.store.q(f"SELECT id FROM buckets WHERE id IN ({marks})",
                                         tuple(waiting)):
                self.seen[found] = now

    def lags(self) -> list[float]:
        return [self.seen[i] - t for i, t in self.sent.items() if i in self.seen]

    def stop(self) -> None:
        wait_until(lambda: all(i in self.seen for i in self.sent), 60)
        self._stop.set()
        for t in self._threads:
            t.join(5)


TAIL = 20  # the last buckets of a phase the bench looks for (both processes' shares)
LOW_EVERY = 5  # one machine in this many is running low (of everything)
UPTIME = 918273645  # a state's uptime, written over with each state's own


def stock_of(machine: int, at: datetime) -> str:
    """The stock the ``machine``-th machine says: running low, one in :data:`LOW_EVERY`."""
    return stock(at, count=2 if machine % LOW_EVERY == 0 else 10).encode()


class Mix:
    """Messages in the mix a machine sends: per machine and hour, 12 states (each its own,
    as a machine's uptime and temperature change), a stock and a usage bucket, the machines
    taken in turn."""

    def __init__(self, fleet: Fleet, ids: list[str], start: datetime) -> None:
        self.fleet, self.ids, self.start = fleet, ids, start
        self.stocks = (stock_of(0, start), stock_of(1, start))  # low, and not
        # each state its own uptime, written into one state's text (the bench's publishers
        # share the CPUs with the hubs: encoding each would take from them)
        self.state = state(start, uptime_s=UPTIME).encode().split(str(UPTIME))
        assert len(self.state) == 2
        self.kinds = ["state"] * 12 + ["stock", "usage"]
        self.rng = random.Random(7)
        self.last: deque[str] = deque(maxlen=TAIL)  # the ids of the last buckets sent
        self.sent = self.buckets = 0

    def send(self) -> None:
        i = self.sent % len(self.ids)
        machine = self.ids[i]
        kind = self.kinds[self.rng.randrange(len(self.kinds))]
        if kind == "usage":
            self.buckets += 1
            usage = bucket(self.start + timedelta(hours=self.buckets % 8760), {"syringe-1ml": 1})
            self.last.append(usage.id)
            self.fleet.say(machine, usage)
        elif kind == "state":
            self.fleet.publish(machine, kind, str(self.sent).join(self.state), retain=True)
        else:
            self.fleet.publish(machine, kind, self.stocks[min(i % LOW_EVERY, 1)], retain=True)
        self.sent += 1


def offer(fleet: Fleet, ids: list[str], rate: float, seconds: float,
          start: datetime) -> tuple[int, int]:
    """Send the mix (:class:`Mix`) at ``rate`` messages a second for ``seconds``. Returns
    how many messages, and how many of them were buckets."""
    mix = Mix(fleet, ids, start)
    t0 = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return mix.sent, mix.buckets
        due = int(elapsed * rate) + 1
        while mix.sent < due:
            mix.send()
        time.sleep(0.005)


def run(n: int, kind: str, hubs: int, pg: Postgres | None, quick: bool) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="nspvend-load-"))
    ids = [f"load-{i:05d}" for i in range(n)]
    where = str(folder / "hub.db") if kind == "sqlite" else pg.database()
    database = {"path": where} if kind == "sqlite" else {"url": where}
    broker = Broker(folder / "broker", extra="max_queued_messages 1000000\n"
                                             "max_inflight_messages 200\n")
    web = free_port()
    config = folder / "hub.toml"
    config.write_text(to_toml({
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "5",
                 "catch_up_s": 0,  # its asking comes 10 minutes in: a load of its own
                 "keepalive_s": 900,  # the broker keeps a hub process paused (100x drained)
                 **({"share_group": "hubs"} if hubs > 1 else {})},
        "machines": known(*ids, "probe-0"),  # the hub stores only the machines it knows
        "database": database, "web": {"listen": f"127.0.0.1:{web}"}}))
    assert hub_cli(config, "user", "add", "bench", "--role", "viewer",
                   stdin=PASSWORD + "\n").returncode == 0
    store = Store(kind, where)
    result: dict = {"machines": n, "store": kind, "hubs": hubs}
    result["seed_s"] = store.seed_year(ids, date.today())
    procs = [HubProcess(config, args=("--instance", str(i + 1)) if hubs > 1 else ())
             for i in range(hubs)]
    fleet = Fleet("127.0.0.1", broker.port, [*ids, "probe-0"], connections=CONNECTIONS,
                  name=f"load-{kind}-{hubs}")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        t0 = time.perf_counter()
        fleet.hello(now)
        for i in range(0, n, LOW_EVERY):
            fleet.publish(ids[i], "stock", stock_of(i, now), retain=True)
        hello = wait_until(lambda: store.machines() >= n, 600, 0.2)
        result["hello_s"] = hello if hello is not None else float("nan")
        client = HubClient(f"http://127.0.0.1:{web}")
        client.login("bench", PASSWORD)
        settle(client, hubs)  # every machine's hello stored: the phases start from rest
        phase = PHASE_S / 4 if quick else PHASE_S
        for factor in (1, 100):
            rate = n * PER_HOUR / 3600 * factor
            probe = Probe(fleet, store, "probe-0")
            before = store.count() - store.count("probe-0")
            t0 = time.perf_counter()
            sent, buckets = offer(fleet, ids, rate, phase, now - timedelta(days=400))
            fleet.wait_acked(300)
            want = before + buckets
            wait_until(lambda want=want: store.count() - store.count("probe-0") >= want, 600, 0.1)
            drained = time.perf_counter() - t0
            probe.stop()
            lags = probe.lags()
            result[f"x{factor}"] = {"offered": rate, "sent": sent, "buckets": buckets,
                                    "drained_s": drained, "stored_rate": sent / drained,
                                    "lag_p50": percentile(lags, .5),
                                    "lag_p99": percentile(lags, .99), "probes": len(lags)}
        # the backlog, as after an outage: every machine's outbox sent while the hub
        # processes are paused (the broker keeps it in their sessions), timed from their
        # going on until every one has stored all it heard: how fast the hubs drain, not how
        # fast the bench's own publishers (on the same two CPUs) send, nor how fast a
        # process starts
        backlog = BACKLOG  # --quick too: a few batches of 2,000 would time nothing
        rates = []
        for drain in range(DRAINS):  # a drain takes seconds: the middle of three, not one
            start = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(days=drain)

            def outbox(start: datetime = start) -> list[str]:
                sent = [bucket(start + timedelta(hours=i // n), {"foil": 1})
                        for i in range(backlog)]
                for i, usage in enumerate(sent):
                    fleet.say(ids[i % n], usage)
                return [usage.id for usage in sent[-TAIL:]]

            rates.append(backlog / paused(procs, client, hubs, fleet, store, outbox))
        result["backlog"] = {"messages": backlog, "rates": rates,
                             "rate": sorted(rates)[len(rates) // 2]}
        # the same for the mix at 100 times the real rate (see the module's words)
        mix = Mix(fleet, ids, now - timedelta(days=800))

        def mixed() -> list[str]:
            for _ in range(max(backlog, int(n * PER_HOUR / 3600 * 100 * phase))):
                mix.send()
            return list(mix.last)

        took = paused(procs, client, hubs, fleet, store, mixed)
        result["mix_100x"] = {"messages": mix.sent, "buckets": mix.buckets, "drained_s": took,
                              "rate": mix.sent / took}
        # the pages on a hub at rest, as staff mostly find it
        result["settled_s"] = settle(client, hubs)
        result["swept_s"] = store.swept()

        timed = client.median_get
        result["fleet_board_s"] = timed("/", 3)
        result["report_year_s"] = timed("/reports?by=year", 3)
        result["rss_mb"] = max(rss_mb(p.proc.pid) for p in procs)
    finally:
        fleet.close()
        for p in procs:
            if p.proc.poll() is None:
                p.terminate()
        broker.kill()
        store.close()
        shutil.rmtree(folder, ignore_errors=True)
    return result


def waiting_and_lag(metrics: str) -> tuple[float, float]:
    """From a hub process's /metrics: the messages it heard and has not stored, and the
    seconds since it last heard one."""
    return (float(re.search(r"^nspvend_hub_batches_waiting (\S+)", metrics, re.M)[1]),
            float(re.search(r"^nspvend_hub_lag_seconds (\S+)", metrics, re.M)[1]))


def quiet_since(client: HubClient, hubs: int, quiet_s: float, every: float,
                timeout: float) -> float | None:
    """When (perf_counter) every hub process had stored all it heard: the first of a run of
    answers from /metrics (asked every ``every`` s, each answered by whichever process takes
    it) that say nothing waits, the run ending with twice as many answers running as there
    are processes that also say nothing was heard for ``quiet_s``. None if not by
    ``timeout``."""
    t0 = time.perf_counter()
    calm, since = 0, None
    while time.perf_counter() - t0 < timeout and calm < 2 * hubs:
        asked = time.perf_counter()
        waiting, lag = waiting_and_lag(client.get("/metrics")[2])
        if waiting == 0:
            since = asked if since is None else since
            calm = calm + 1 if lag >= quiet_s else 0
        else:
            calm, since = 0, None
        time.sleep(every)
    return since if calm >= 2 * hubs else None


def paused(procs: list[HubProcess], client: HubClient, hubs: int, fleet: Fleet,
           store: Store, send: Callable[[], list[str]]) -> float:
    """Seconds the hub processes take to store what ``send`` sends while they are paused
    (SIGSTOP: the broker keeps it for them, and they are not given every machine's
    retained words again, as a process started is), from their going on until every one
    has stored all it heard. ``send`` returns the ids of the last buckets it sent: each
    process stores its share in order, so once those are kept (a few keys looked up, not
    every bucket counted, while the hubs drain) the rest are, and then /metrics says when
    each process was done."""
    settle(client, hubs)  # from rest
    for p in procs:
        p.proc.send_signal(signal.SIGSTOP)
    tail = send()
    fleet.wait_acked(600)
    t0 = time.perf_counter()
    for p in procs:
        p.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: store.kept(tail) == len(tail), 900, 0.02)
    return all_stored(client, hubs) - t0


def all_stored(client: HubClient, hubs: int, timeout: float = 900) -> float:
    """When every hub process had stored all it heard (:func:`quiet_since`, nothing heard
    for 0.5 s, asked every 0.05 s), or nan."""
    since = quiet_since(client, hubs, 0.5, 0.05, timeout)
    return since if since is not None else float("nan")


def settle(client: HubClient, hubs: int, quiet_s: float = 2.0, timeout: float = 600) -> float:
    """Wait until every hub process has stored what it heard and heard nothing for
    ``quiet_s`` (:func:`quiet_since`, asked every 0.25 s); the seconds it took."""
    t0 = time.perf_counter()
    quiet_since(client, hubs, quiet_s, 0.25, timeout)
    return time.perf_counter() - t0


def table(results: list[dict]) -> str:
    head = ("| machines | store | hubs | 1x: msg/s | lag p50 / p99 | 100x: msg/s offered "
            "(stored) | lag p50 / p99 | 100x drained | backlog drained | fleet board | year report "
            "| RSS |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in results:
        a, b = r["x1"], r["x100"]
        lines.append(
            f"| {r['machines']:,} | {r['store']} | {r['hubs']} "
            f"| {a['offered']:.1f} | {a['lag_p50']:.2f} / {a['lag_p99']:.2f} s "
            f"| {b['offered']:.0f} ({b['stored_rate']:.0f}) | {b['lag_p50']:.2f} / {b['lag_p99']:.2f} s "
            f"| {r['mix_100x']['rate']:.0f} msg/s | {r['backlog']['rate']:.0f} msg/s "
            f"| {r['fleet_board_s'] * 1000:.0f} ms "
            f"| {r['report_year_s'] * 1000:.0f} ms | {r['rss_mb']:.0f} MB |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, 100 and 1,000 machines")
    parser.add_argument("--machines", help="comma-separated fleet sizes (default 100,1000,10000)")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--hubs", default="1,2")
    args = parser.parse_args()
    sizes = [int(x) for x in (args.machines or ("100,1000" if args.quick else "100,1000,10000"))
             .split(",")]
    stores = args.stores.split(",")
    if "postgresql" in stores and WHY_NOT:
        print(f"hub_load: {WHY_NOT}", file=sys.stderr)
        stores.remove("postgresql")
    pg = Postgres(durable=True) if "postgresql" in stores else None
    results = []
    try:
        for n in sizes:
            for kind in stores:
                for hubs in (int(h) for h in args.hubs.split(",")):
                    print(f"hub_load: {n} machines, {kind}, {hubs} hub process(es) ...",
                          file=sys.stderr, flush=True)
                    results.append(run(n, kind, hubs, pg, args.quick))
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        if pg is not None:
            pg.stop()
    print()
    print(f"nspvend hub load on {os.uname().nodename} ({os.cpu_count()} CPUs), "
          f"{time.strftime('%Y-%m-%d')}{' (quick)' if args.quick else ''}")
    print()
    print(table(results))
    (ROOT / "bench" / "hub_load.json").write_text(json.dumps(
        {"date": iso(datetime.now(UTC)), "cpus": os.cpu_count(), "quick": args.quick,
         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

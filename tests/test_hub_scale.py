"""The hub past one box: two hub processes on one PostgreSQL sharing the machines' messages
through an MQTT 5 shared subscription, one killed with kill -9 mid-stream; a machine behind
a site broker bridged to the central one. Real mosquitto, real PostgreSQL
(tests/postgres.py), light machines speaking the contract (simulator/fleet.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.clock import iso
from simulator.fleet import PRODUCTS, Fleet, bucket, state
from tests.broker import MOSQUITTO, Broker
from tests.daemon_process import HubProcess, add_user
from tests.hub_client import HubClient
from tests.machines import known, to_toml
from tests.test_hub import Webhook, free_port, hub_cli, wait

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

PASSWORD = "staff password 1"
START = datetime(2026, 11, 1, tzinfo=UTC)


def stored_buckets(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM buckets),"
                            " (SELECT count(*) FROM bucket_counts)").fetchone()


def take_down(fleet: Fleet, hubs: Iterable[HubProcess | None], broker: Broker) -> None:
    """What a test started, stopped: the fleet, each hub process still running, the broker."""
    fleet.close()
    for hub in hubs:
        if hub is not None and hub.proc.poll() is None:
            hub.kill()
    broker.kill()


def sqlite_buckets(path) -> int:
    """How many buckets the hub's SQLite file holds, read as another program would."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM buckets").fetchone()[0]
    finally:
        db.close()


def test_two_hubs_on_postgresql_share_the_stream_and_a_kill_9_loses_and_doubles_nothing(
        tmp_path, pg_url):
    hook = Webhook()
    broker = Broker(tmp_path / "broker", extra="max_queued_messages 100000\n")
    web_port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(to_toml({
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "5",
                 "share_group": "hubs"},
        "machines": known(*(f"fleet-{n:02d}" for n in range(20))),
        "database": {"url": pg_url},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "alerts": {"routes": [{"types": ["jam"], "webhook": hook.url}]}}))
    add_user(config, "sam", "staff", PASSWORD)
    hubs = {n: HubProcess(config, args=("--instance", str(n))) for n in (1, 2)}
    ids = [f"fleet-{n:02d}" for n in range(20)]
    fleet = Fleet("127.0.0.1", broker.port, ids, connections=4)
    try:
        fleet.hello(START)
        leader = next(n for n, h in hubs.items() if any("runs the alerts" in line for line in h.log))
        fleet.say("fleet-03", state(START, faults=["slot 3: jam"]))
        wait(lambda: [b for b in hook.bodies if b["state"] == "raised"], 30, "jam raised")

        sent: list = []
        half = threading.Event()

        def publish() -> None:  # 30 hours of buckets from each of 20 machines, a few at a time
            for hour in range(30):
                for m in ids:
                    u = bucket(START + timedelta(hours=hour),
                               {p: (hour + i + len(m)) % 4 for i, p in enumerate(PRODUCTS)})
                    fleet.say(m, u)
                    sent.append(u)
                if hour == 12:
                    half.set()
                time.sleep(0.02)

        publisher = threading.Thread(target=publish)
        publisher.start()
        half.wait(30)
        hubs[leader].kill()  # kill -9, mid-stream, the process that runs the alerts
        before = stored_buckets(pg_url)[0]
        assert before < 500, "the kill came too late to be mid-stream"
        wait(lambda: stored_buckets(pg_url)[0] > before + 20, 30,
             "the other hub storing on its own")
        fleet.say("fleet-03", state(START))  # the jam is mended while the leader is dead
        wait(lambda: [b for b in hook.bodies if b["state"] == "cleared"], 30,
             "jam cleared by the other hub, now running the alerts")
        publisher.join(60)
        for u in sent[:40]:  # machines that send again what they already sent
            fleet.say(ids[0], u)
        assert fleet.wait_acked(60)
        hubs[leader] = HubProcess(config, args=("--instance", str(leader)))  # systemd's restart
        wait(lambda: stored_buckets(pg_url) == (600, 600 * len(PRODUCTS)), 60,
             "all 600 buckets stored")

        staff = HubClient(f"http://127.0.0.1:{web_port}")
        assert staff.login("sam", PASSWORD)[0] == 200
        rows = staff.csv("/reports/usage.csv?from=2026-11-01&to=2026-11-03")
        got = {(r["machine"], r["product"]): int(r["confirmed"]) for r in rows}
        want: dict[tuple[str, str], int] = {}
        for hour in range(30):
            for m in ids:
                for i, p in enumerate(PRODUCTS):
                    want[(m, p)] = want.get((m, p), 0) + (hour + i + len(m)) % 4
        assert got == want
        for _ in range(4):  # through the shared port: either process answers, each once
            status, answer = staff.post_json("/api/machines/fleet-05/commands", {"cmd": "status"})
            assert status == 200 and answer["ok"], answer
        assert len([c for m, c in fleet.commands if m == "fleet-05"]) == 4
        assert len({c["id"] for _, c in fleet.commands}) == len(fleet.commands)
        time.sleep(4)  # two more rounds of checks by whichever process runs the alerts
        assert [(b["machine"], b["type"], b["state"]) for b in hook.bodies] == [
            ("fleet-03", "jam", "raised"), ("fleet-03", "jam", "cleared")]
    finally:
        take_down(fleet, hubs.values(), broker)
        hook.close()


def test_two_hub_processes_share_the_machines_words_and_the_latest_told_stands(tmp_path):
    """With a share group, each state and stock goes to one process, not to both (two
    processes then do half the work each, where they each did all of it); the words the
    machines retained at the broker before either started (one machine quiet since) are
    stored all the same (a broker keeping to MQTT 5 gives a shared subscription none:
    mosquitto 2.0 does); and whichever process stores them in whatever order, each
    machine's latest told stands (an older state heard last is not kept)."""
    from hub.config import parse_hub_config
    from hub.listener import Listener
    from hub.store import SqliteStore
    from simulator.fleet import stock

    broker = Broker(tmp_path / "broker")
    ids = [f"site-{n:02d}" for n in range(6)]
    config = parse_hub_config({
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "5",
                 "share_group": "hubs-" + "x" * 16}, "machines": known(*ids)})
    fleet = Fleet("127.0.0.1", broker.port, ids, connections=2)
    now = datetime.now(UTC).replace(microsecond=0)
    listeners: list[Listener] = []
    live: list[list[tuple[str, int]]] = [[], []]  # the states each process stored, live
    try:
        for i, m in enumerate(ids):  # said before any hub process ran
            fleet.publish(m, "state", state(now - timedelta(hours=1), uptime_s=i).encode(),
                          retain=True)
            fleet.publish(m, "stock", stock(now - timedelta(hours=1), count=i).encode(),
                          retain=True)
        assert fleet.wait_acked(30)
        for n in (0, 1):
            listeners.append(Listener(
                config, SqliteStore(tmp_path / "hub.db"), client_id=f"nspvend-hub-{n + 1}",
                on_heard=lambda heard, n=n: live[n].extend(
                    (h.machine, h.message.uptime_s) for h in heard
                    if h.leaf == "state" and h.message.uptime_s >= 100)))
            listeners[-1].start()
        for listener in listeners:  # subscribed alone for the retained words, and no longer
            assert listener.caught_up.wait(30)
        store = listeners[0].store
        wait(lambda: [(m.state and m.state.uptime_s, m.stock and m.stock.slots[0].count)
                      for m in store.fleet.machines()] == [(i, i) for i in range(len(ids))],
             30, "the retained words stored")
        sent = []
        for minute in range(1, 11):  # live: each machine's states, told a minute apart
            for i, m in enumerate(ids[1:]):
                fleet.publish(m, "state", state(now - timedelta(minutes=30 - minute),
                                                uptime_s=100 * minute + i).encode())
                sent.append((m, 100 * minute + i))
        fleet.publish(ids[1], "state", state(now - timedelta(minutes=50), uptime_s=100,
                                             door="open").encode())
        sent.append((ids[1], 100))
        assert fleet.wait_acked(30)
        wait(lambda: len(live[0]) + len(live[1]) >= len(sent), 30, "the live states stored")
        assert sorted(live[0] + live[1]) == sorted(sent)  # each by one process
        assert live[0] and live[1]  # and both had a share
        assert [(m.state.uptime_s, m.state.door) for m in store.fleet.machines()] == [
            (0, "closed"), *((1000 + i, "closed") for i in range(len(ids) - 1))]
    finally:
        for listener in listeners:
            listener.stop()
            listener.store.close()
        fleet.close()
        broker.kill()


def test_a_machine_behind_a_bridged_site_broker_is_seen_and_commanded_by_the_central_hub(
        tmp_path):
    from tests.daemon_process import ROOT, DaemonProcess
    from tests.machines import machine_toml

    central = Broker(tmp_path / "central")
    bridge = (ROOT / "examples" / "mosquitto" / "site-bridge.conf").read_text()
    bridge = bridge.replace("address central.example.org:8883", f"address 127.0.0.1:{central.port}")
    # the test's central broker takes anyone on loopback, without TLS
    bridge = "\n".join(line for line in bridge.splitlines()
                       if not line.startswith(("remote_username", "remote_password", "bridge_ca",
                                               "bridge_tls")))
    site = Broker(tmp_path / "site", extra=bridge + "\n")
    web_port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": central.port},
                               "machines": known("site-01"), "database": {"path": "hub.db"},
                               "web": {"listen": f"127.0.0.1:{web_port}"}}))
    add_user(config, "sam", "staff", PASSWORD)
    hub = HubProcess(config)
    folder = tmp_path / "site-01"
    folder.mkdir()
    (folder / "nspvend.toml").write_text(machine_toml(
        "site-01", "sim", sim={"control": "sim.sock"}, database={"path": "nspvend.db"},
        control={"socket": "control.sock"}, mqtt={"host": "127.0.0.1", "port": site.port}))
    daemon = DaemonProcess(folder / "nspvend.toml")
    try:
        staff = HubClient(f"http://127.0.0.1:{web_port}")
        assert staff.login("sam", PASSWORD)[0] == 200

        def seen() -> dict | None:
            machines = {m["id"]: m for m in staff.json("/api/machines")}
            m = machines.get("site-01")
            return m if m and m["online"] and m["stock"] else None

        wait(seen, 30, "the site's machine on the central hub")
        status, answer = staff.post_json("/api/machines/site-01/commands",
                                         {"cmd": "refill", "slot": 3, "count": 7})
        assert status == 200 and answer["ok"], answer
        wait(lambda: any(s["slot"] == 3 and s["count"] == 7
                         for s in staff.json("/api/machines")[0]["stock"]["slots"]), 30,
             "the refill's stock back at the central hub")
    finally:
        daemon.kill()
        hub.kill()
        site.kill()
        central.kill()


def test_backup_restore_and_the_database_settings_from_the_command_line(tmp_path, pg_url):
    from datetime import date

    from hub import reports
    from hub.store import SqliteStore

    config = tmp_path / "hub.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1"}, "database": {"path": "hub.db"}}))
    add_user(config, "sam", "staff", PASSWORD)
    store = SqliteStore(tmp_path / "hub.db")
    with store.transaction():
        store.fleet.heard("m1", START)
        for hour in range(72):
            store.usage.record_usage("m1", bucket(START + timedelta(hours=hour), {"foil": hour % 3}),
                               START)
    backed = hub_cli(config, "backup", str(tmp_path / "copy.db"))
    assert backed.returncode == 0 and "backed up" in backed.stdout, backed.stderr
    assert (tmp_path / "copy.db").stat().st_mode & 0o077 == 0  # it holds password hashes
    again = hub_cli(config, "backup", str(tmp_path / "copy.db"))
    assert again.returncode == 64 and "already there" in again.stderr
    restored = tmp_path / "restored.toml"  # restoring: point a hub at the copy
    restored.write_text(to_toml({"mqtt": {"host": "127.0.0.1"}, "database": {"path": "copy.db"}}))
    assert "sam " in hub_cli(restored, "user", "list").stdout
    copy = SqliteStore(tmp_path / "copy.db")
    assert (reports.usage_csv(copy, date(2026, 11, 1), date(2026, 11, 5))
            == reports.usage_csv(store, date(2026, 11, 1), date(2026, 11, 5)))
    copy.close()
    store.close()

    on_pg = tmp_path / "pg.toml"
    on_pg.write_text(to_toml({"mqtt": {"host": "127.0.0.1"}, "database": {"url": pg_url}}))
    refused = hub_cli(on_pg, "backup", str(tmp_path / "pg-copy.db"))
    assert refused.returncode == 64 and "pg_dump" in refused.stderr
    down = tmp_path / "down.toml"
    down.write_text(to_toml({"mqtt": {"host": "127.0.0.1"},
                             "database": {"url": f"postgresql://127.0.0.1:{free_port()}/x"}}))
    unreachable = hub_cli(down, "user", "list")
    assert unreachable.returncode == 69 and len(unreachable.stderr.splitlines()) == 1, \
        unreachable.stderr
    assert "cannot reach the database" in unreachable.stderr


def test_a_postgresql_store_dumped_with_pg_dump_restores_to_the_same_reports(
        tmp_path, postgres_server):
    """What the README tells a DBA to do: pg_dump -Fc, pg_restore into a new database; the
    hub opens the copy, its reports are the same, and it goes on storing (exactly once)."""
    from datetime import date

    from hub import reports
    from hub.store import PgStore
    from tests.postgres import BIN

    url = postgres_server.database()
    store = PgStore(url)
    sent = [bucket(START + timedelta(hours=hour), {"foil": hour % 3}) for hour in range(72)]
    with store.transaction():
        store.fleet.heard("m1", START)
        for u in sent:
            store.usage.record_usage("m1", u, START)
    dump = tmp_path / "nspvend.dump"
    subprocess.run([f"{BIN}/pg_dump", "-Fc", "-f", str(dump), url], check=True,
                   capture_output=True)
    copy_url = postgres_server.database()
    subprocess.run([f"{BIN}/pg_restore", "--no-owner", "-d", copy_url, str(dump)], check=True,
                   capture_output=True)
    copy = PgStore(copy_url)
    try:
        assert (reports.usage_csv(copy, date(2026, 11, 1), date(2026, 11, 5))
                == reports.usage_csv(store, date(2026, 11, 1), date(2026, 11, 5)))
        later = bucket(START + timedelta(hours=72), {"foil": 2})
        with copy.transaction():
            assert copy.usage.record_usage("m1", later, START)
            assert not copy.usage.record_usage("m1", sent[0], START)  # heard before the dump
    finally:
        copy.close()
        store.close()


@pytest.mark.parametrize("settings, problem", [
    ({"database": {"url": "postgresql:///nspvend", "path": "hub.db"}}, "database.url: give url"),
    ({"database": {"url": "postgresql://hub:secret@db/nspvend"}}, "database.url: has a password"),
    ({"database": {"url": "mysql://db/secret"}}, "database.url: must be a PostgreSQL address"),
    ({"database": {"url": "postgresql://db/nspvend?password=secret"}},
     "database.url: has a password"),
    ({"database": {"url": "postgresql://hub:se/cret@db/nspvend"}}, "database.url: has a password"),
    ({"database": {"password_file": "hub.toml"}}, "database.password_file: is for PostgreSQL"),
    ({"database": {"keep_events_days": 1}}, "database.keep_events_days: must be a whole number"),
    ({"mqtt": {"host": "127.0.0.1", "share_group": "hubs"}}, "mqtt.share_group: shared"),
    ({"mqtt": {"host": "127.0.0.1", "client_id": "a b"}}, "mqtt.client_id: must be"),
])
def test_a_bad_database_or_sharing_setting_is_one_line_and_exit_78(tmp_path, settings, problem):
    config = tmp_path / "hub.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1"}, **settings}))
    result = hub_cli(config, "user", "list")
    assert result.returncode == 78 and len(result.stderr.splitlines()) == 1, result.stderr
    assert problem in result.stderr, result.stderr
    assert "secret" not in result.stderr


def test_a_hub_process_taken_away_for_good_is_retired_and_its_share_is_stored(tmp_path):
    """A stopped hub process's session keeps its share of the stream at the broker (for its
    restart); ``nspvend hub retire`` stores what waits there and ends the session, after
    which the process left stores every bucket. Refused while the process runs."""
    broker = Broker(tmp_path / "broker", extra="max_queued_messages 100000\n")
    config = tmp_path / "hub.toml"
    config.write_text(to_toml({
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "5",
                 "share_group": "hubs"}, "machines": known(*(f"site-{n:02d}" for n in range(10))),
        "database": {"path": "hub.db"}, "web": {"listen": f"127.0.0.1:{free_port()}"}}))
    hubs = {n: HubProcess(config, args=("--instance", str(n))) for n in (1, 2)}
    ids = [f"site-{n:02d}" for n in range(10)]
    fleet = Fleet("127.0.0.1", broker.port, ids, connections=2)

    def stored() -> int:
        return sqlite_buckets(tmp_path / "hub.db")

    def send(first_hour: int) -> None:
        for hour in range(first_hour, first_hour + 10):
            for m in ids:
                fleet.say(m, bucket(START + timedelta(hours=hour), {"foil": 1}))
        assert fleet.wait_acked(60)

    try:
        fleet.hello(START)
        # stopped, as if for good: its session stays (two processes share one SQLite file
        # here, so under a loaded test run its last write may wait its turn a while)
        assert hubs[2].terminate(60) == 0
        send(0)
        wait(lambda: stored() >= 30, 30, "the running hub storing its share: "
             + "".join(hubs[1].log[-20:]))
        assert stored() < 100, "nothing was kept at the broker for the stopped process"

        running = hub_cli(config, "retire", "--instance", "1")
        assert running.returncode == 75, running.stderr
        assert running.stderr.splitlines()[-1].startswith(
            "nspvend hub retire: hub process 1: it is still running (it took its session back)")
        retired = hub_cli(config, "retire", "--instance", "2")
        assert retired.returncode == 0, retired.stderr
        held = 100 - stored()
        assert held == 0, f"{held} buckets still not stored after retiring"
        assert "retired hub process 2" in retired.stdout

        send(10)  # the broker now gives the one process left every bucket
        wait(lambda: stored() == 200, 30, "every bucket stored by the process left")
        alone = tmp_path / "alone.toml"
        alone.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": broker.port},
                                  "machines": known(*ids), "database": {"path": "hub.db"}}))
        refused = hub_cli(alone, "retire", "--instance", "2")
        assert refused.returncode == 64 and "mqtt.share_group" in refused.stderr
    finally:
        take_down(fleet, hubs.values(), broker)


def test_buckets_that_never_reached_the_hub_are_asked_for_and_stored_once(tmp_path):
    """A stranger on the broker takes a share of the hub's usage (any account may join a
    shared subscription whose name it knows), and a bucket the broker lost: the hub's
    catch-up asks each machine for its recent buckets and stores the missing ones, once."""
    broker = Broker(tmp_path / "broker")
    config = tmp_path / "hub.toml"
    config.write_text(to_toml({
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "5",
                 "share_group": "hubs", "catch_up_s": 3},
        "machines": known(*(f"far-{n}" for n in range(4))), "database": {"path": "hub.db"},
        "web": {"listen": f"127.0.0.1:{free_port()}"}}))
    hub = HubProcess(config, args=("--instance", "1"))
    stolen: list[str] = []
    joined = threading.Event()
    stranger = paho.Client(CallbackAPIVersion.VERSION2, client_id="stranger", protocol=paho.MQTTv5)
    stranger.on_message = lambda c, u, message: stolen.append(message.topic)
    stranger.on_subscribe = lambda c, u, mid, reasons, props: joined.set()
    stranger.connect("127.0.0.1", broker.port)
    stranger.loop_start()
    stranger.subscribe("$share/hubs/nspvend/+/usage", qos=1)
    ids = [f"far-{n}" for n in range(4)]
    fleet = Fleet("127.0.0.1", broker.port, ids, connections=2)

    def stored() -> int:
        return sqlite_buckets(tmp_path / "hub.db")

    recent = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=8)
    try:
        assert joined.wait(10)
        fleet.hello(recent)
        for hour in range(5):
            for m in ids:
                fleet.say(m, bucket(recent + timedelta(hours=hour), {"foil": 1 + hour}))
        fleet.keep("far-0", bucket(recent + timedelta(hours=5), {"foil": 7}))  # the broker lost it
        assert fleet.wait_acked(30)
        wait(lambda: len(stolen) >= 5, 30, "the stranger taking its share")
        wait(lambda: stored() == 21, 30, "every bucket, asked for")
        asked = [c for _, c in fleet.commands if c.get("cmd") == "usage"]
        assert len({m for m, c in fleet.commands if c.get("cmd") == "usage"}) == len(ids)
        assert all(c["since"] <= iso(recent - timedelta(days=1)) for c in asked)
        wait(lambda: len([c for _, c in fleet.commands if c.get("cmd") == "usage"])
             >= 2 * len(ids), 30, "a second round of asking")
        assert stored() == 21  # asked twice, stored once
        db = sqlite3.connect(tmp_path / "hub.db")
        total = db.execute("SELECT sum(confirmed) FROM bucket_counts").fetchone()[0]
        db.close()
        assert total == 4 * (1 + 2 + 3 + 4 + 5) + 7
        assert any("had not reached the hub" in line for line in hub.log)
    finally:
        stranger.loop_stop()
        stranger.disconnect()
        take_down(fleet, [hub], broker)


def test_the_command_line_opening_the_sqlite_store_while_the_hub_runs_loses_nothing(tmp_path):
    """``nspvend hub user add`` (or a second hub process) opens the file the running hub
    writes: neither may take the hub's SQLite locks away (a lock taken on the database file
    itself and let go released SQLite's own; the second to close then deleted the WAL the
    hub was still writing, and every bucket after it was lost)."""
    broker = Broker(tmp_path / "broker")
    config = tmp_path / "hub.toml"
    config.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": broker.port},
                               "database": {"path": "hub.db"}, "machines": known("cli-1"),
                               "web": {"listen": f"127.0.0.1:{free_port()}"}}))
    hub = HubProcess(config)
    fleet = Fleet("127.0.0.1", broker.port, ["cli-1"], connections=1)

    def stored() -> int:
        return sqlite_buckets(tmp_path / "hub.db")

    try:
        for hour in range(5):
            fleet.say("cli-1", bucket(START + timedelta(hours=hour), {"foil": 1}))
        wait(lambda: stored() == 5, 30, "the first buckets stored")
        add_user(config, "sam", "staff", PASSWORD)
        assert hub_cli(config, "user", "list").returncode == 0
        for hour in range(5, 10):
            fleet.say("cli-1", bucket(START + timedelta(hours=hour), {"foil": 1}))
        wait(lambda: stored() == 10, 30, "the buckets after the command line stored")
        assert hub.terminate() == 0
        assert stored() == 10  # and still there once the hub has stopped
    finally:
        take_down(fleet, [hub], broker)


def test_a_hub_started_before_its_database_waits_for_it(tmp_path):
    """At boot PostgreSQL may come up after the hub (or be restarting): the hub says so, one
    line, and waits, rather than exit until systemd stops restarting it."""
    import os
    import sys

    from tests.daemon_process import ROOT
    from tests.postgres import WHY_NOT, Postgres

    if WHY_NOT:
        pytest.skip(WHY_NOT)
    server = Postgres()
    broker = Broker(tmp_path / "broker")
    proc = None
    try:
        url = server.database()
        server.pause()
        config = tmp_path / "hub.toml"
        config.write_text(to_toml({"mqtt": {"host": "127.0.0.1", "port": broker.port},
                                   "database": {"url": url},
                                   "web": {"listen": f"127.0.0.1:{free_port()}"}}))
        proc = subprocess.Popen([sys.executable, "-m", "controller", "hub", "run", "--config",
                                 str(config)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "NSPVEND_LOG_LEVEL": "INFO"})
        guard = threading.Timer(60, proc.kill)  # never a hung suite
        guard.start()
        lines = iter(proc.stderr)
        first, second = next(lines), next(lines)
        assert "cannot reach the database at postgresql://127.0.0.1:" in first, first
        assert second == "nspvend hub: trying again in 5 s\n"
        server.resume()
        assert any("nspvend hub ready" in line for line in lines)
        proc.terminate()
        assert proc.wait(30) == 0
        guard.cancel()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        broker.kill()
        server.stop()


def test_moving_from_one_hub_to_several_retires_the_one_hubs_session(tmp_path):
    """The hub ran alone (one session with every message); it is stopped and replaced by
    processes sharing the messages. What came meanwhile waits in the old session:
    ``nspvend hub retire`` (no --instance) stores it and ends that session."""
    broker = Broker(tmp_path / "broker", extra="max_queued_messages 100000\n")
    alone, shared = tmp_path / "alone.toml", tmp_path / "shared.toml"
    for path, extra in ((alone, {}), (shared, {"share_group": "hubs-" + "x" * 16})):
        path.write_text(to_toml({
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "5", **extra},
            "machines": known("move-1"),
            "database": {"path": "hub.db"}, "web": {"listen": f"127.0.0.1:{free_port()}"}}))
    fleet = Fleet("127.0.0.1", broker.port, ["move-1"], connections=1)
    hub = HubProcess(alone)
    new = None
    try:
        fleet.hello(START)
        assert hub.terminate() == 0
        for hour in range(10):
            fleet.say("move-1", bucket(START + timedelta(hours=hour), {"foil": 1}))
        assert fleet.wait_acked(30)
        new = HubProcess(shared, args=("--instance", "1"))
        assert sqlite_buckets(tmp_path / "hub.db") == 0  # all ten wait in the old session
        retired = hub_cli(shared, "retire")
        assert retired.returncode == 0, retired.stderr
        assert "retired the hub as it ran alone" in retired.stdout
        assert sqlite_buckets(tmp_path / "hub.db") == 10
        for hour in range(10, 15):
            fleet.say("move-1", bucket(START + timedelta(hours=hour), {"foil": 1}))
        wait(lambda: sqlite_buckets(tmp_path / "hub.db") == 15, 30, "the new process storing")
    finally:
        take_down(fleet, [hub, new], broker)

"""The hub past one box: two hub processes on one PostgreSQL sharing the machines' messages
through an MQTT 5 shared subscription, one killed with kill -9 mid-stream; a machine behind
a site broker bridged to the central one. Real mosquitto, real PostgreSQL
(tests/postgres.py), light machines speaking the contract (simulator/fleet.py)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from simulator.fleet import PRODUCTS, Fleet, bucket, state
from tests.broker import MOSQUITTO, Broker
from tests.daemon_process import HubProcess
from tests.hub_client import HubClient
from tests.machines import to_toml
from tests.test_hub import Webhook, free_port, hub_cli, wait

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

PASSWORD = "staff password 1"
START = datetime(2026, 11, 1, tzinfo=UTC)


def stored_buckets(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM buckets),"
                            " (SELECT count(*) FROM bucket_counts)").fetchone()


def test_two_hubs_on_postgresql_share_the_stream_and_a_kill_9_loses_and_doubles_nothing(
        tmp_path, pg_url):
    hook = Webhook()
    broker = Broker(tmp_path / "broker", extra="max_queued_messages 100000\n")
    web_port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(to_toml({
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "protocol": "5",
                 "share_group": "hubs"},
        "database": {"url": pg_url},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "alerts": {"routes": [{"types": ["jam"], "webhook": hook.url}]}}))
    added = hub_cli(config, "user", "add", "sam", "--role", "staff", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
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
        fleet.close()
        for h in hubs.values():
            if h.proc.poll() is None:
                h.kill()
        broker.kill()
        hook.close()


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
                               "database": {"path": "hub.db"},
                               "web": {"listen": f"127.0.0.1:{web_port}"}}))
    assert hub_cli(config, "user", "add", "sam", "--role", "staff",
                   stdin=PASSWORD + "\n").returncode == 0
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
    assert hub_cli(config, "user", "add", "sam", "--role", "staff",
                   stdin=PASSWORD + "\n").returncode == 0
    store = SqliteStore(tmp_path / "hub.db")
    with store.transaction():
        store.heard("m1", START)
        for hour in range(72):
            store.record_usage("m1", bucket(START + timedelta(hours=hour), {"foil": hour % 3}),
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


@pytest.mark.parametrize("settings, problem", [
    ({"database": {"url": "postgresql:///nspvend", "path": "hub.db"}}, "database.url: give url"),
    ({"database": {"url": "postgresql://hub:secret@db/nspvend"}}, "database.url: has a password"),
    ({"database": {"url": "mysql://db/nspvend"}}, "database.url: must be a PostgreSQL address"),
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

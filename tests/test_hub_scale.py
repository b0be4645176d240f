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

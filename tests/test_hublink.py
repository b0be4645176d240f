"""The hub link against a real Mosquitto: retained state, the outbox, commands, outages, kill -9."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from tests.broker import MOSQUITTO, Broker, Subscriber, usage_totals
from tests.daemon_process import BoardProcess, DaemonProcess, ask
from tests.machines import machine_toml
from tests.test_daemon_cli import CONFIG as SIM_CONFIG
from tests.test_serial_daemon import CONFIG as SERIAL_CONFIG

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

ROOT_TOPIC = "nspvend/e2e-01"


def config_with_mqtt(tmp: Path, port: int, extra: str = "") -> Path:
    path = tmp / "nspvend.toml"
    text = SIM_CONFIG.replace('[database]', f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                              f'state_interval_s = 600\n{extra}\n'
                              '[database]')
    path.write_text(text)
    return path


@pytest.fixture
def hub(tmp_path: Path):
    broker = Broker(tmp_path / "broker")
    # a persistent session, as the hub has: what is published while it reconnects waits for it
    subscriber = Subscriber(broker.port, client_id="hub-under-test")
    yield broker, subscriber
    subscriber.close()
    if broker.proc.poll() is None:
        broker.kill()


def start_machine(tmp: Path, port: int, extra: str = "", sub: Subscriber | None = None
                  ) -> DaemonProcess:
    """Start the daemon; with ``sub``, wait until it is online at the hub."""
    daemon = DaemonProcess(config_with_mqtt(tmp, port, extra))
    if sub is not None:
        wait_online(sub)
    return daemon


def wait_online(sub: Subscriber, since: int = 0) -> None:
    sub.wait_for(lambda m: "online" in sub.payloads("availability")[since:])


def load_and_fill(tmp: Path, sub: Subscriber) -> None:
    for slot, count in ((1, 20), (2, 20), (3, 10)):
        ask(tmp / "sim.sock", {"op": "load", "slot": slot, "count": count})
    command(sub, {"id": "fill-1", "cmd": "refill", "all": True})


def command(sub: Subscriber, request: dict | str | bytes) -> dict:
    """Send a command as the hub does and wait for its result."""
    before = len(sub.payloads("result"))
    raw = request if isinstance(request, str | bytes) else json.dumps(request)
    sub.publish(f"{ROOT_TOPIC}/cmd", raw)
    sub.wait_for(lambda m: len([1 for t, _, _ in m if t.endswith("/cmd/result")]) > before)
    return sub.payloads("result")[before]


def test_on_connect_the_machine_says_online_and_publishes_retained_state_and_stock(tmp_path, hub):
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port)
    try:
        sub.wait_for(lambda m: {t for t, _, _ in m} >= {
            f"{ROOT_TOPIC}/availability", f"{ROOT_TOPIC}/state", f"{ROOT_TOPIC}/stock"})
        assert sub.payloads("availability")[-1] == "online"
        state = sub.payloads("state")[-1]
        assert state["schema"] == 1 and state["mode"] == "in_service"
        assert set(state) >= {"door", "sharps_bin", "temperature_c", "faults", "version",
                              "uptime_s", "clock_synced", "ts"}
        stock = sub.payloads("stock")[-1]
        assert [s["slot"] for s in stock["slots"]] == [1, 2, 3]
        assert stock["products"]["foil"] == {"count": 0, "status": "empty", "name": "foil"}
        # a late subscriber gets the retained messages
        late = Subscriber(broker.port, f"{ROOT_TOPIC}/+")
        msgs = late.wait_for(lambda m: len(m) >= 3)
        assert all(retain for _, _, retain in msgs)
        late.close()
    finally:
        assert daemon.terminate() == 0
    sub.wait_for(lambda m: sub.payloads("availability")[-1:] == ["offline"])


def test_usage_and_events_arrive_once_and_staff_actions_publish_stock_at_once(tmp_path, hub):
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, sub=sub)
    try:
        load_and_fill(tmp_path, sub)
        sub.wait_for(lambda m: any(e.get("type") == "refilled" for e in sub.payloads("event")))
        stock = sub.wait_for(lambda m: sub.payloads("stock")[-1]["products"]["foil"]["count"] == 10)
        assert stock
        for button in (1, 1, 2):
            ask(tmp_path / "sim.sock", {"op": "press", "button": button})
        result = command(sub, {"id": "s1", "cmd": "status"})
        # the hub is told what was published (the refill), never a live count
        assert result["ok"] and result["result"]["stock"]["products"]["foil"]["count"] == 10
        assert set(result["result"]) == {"state", "stock", "hub_open"}
    finally:
        assert daemon.terminate() == 0
    usage = sub.wait_for(lambda m: sub.payloads("usage"))
    totals, _ = usage_totals(sub.payloads("usage"))
    assert totals == {"syringe-1ml": 2, "foil": 1}
    [bucket] = sub.payloads("usage")
    assert set(bucket) == {"schema", "id", "start", "end", "counts", "unconfirmed", "clock_synced"}
    events = sub.payloads("event")
    assert len({e["id"] for e in events}) == len(events)
    assert all(set(e) >= {"schema", "id", "ts", "type"} for e in events)
    assert usage


BAD_COMMANDS = [
    (b"{not json", "request:"),
    (b"x" * 20000, "request: larger than"),
    (json.dumps({"cmd": "status"}), "id:"),
    (json.dumps({"id": "b1", "cmd": "launch"}), "cmd:"),
    (json.dumps({"id": "b2", "cmd": "refill", "slot": 42, "count": 1}), "slot:"),
    (json.dumps({"id": "b3", "cmd": "refill", "slot": 1, "count": "many"}), "count:"),
    (json.dumps({"id": "b4", "cmd": "set_mode", "mode": "disco"}), "mode:"),
    (json.dumps({"id": "b5", "cmd": "status", "expires": "2001-01-01T00:00:00Z"}), "expires:"),
    (json.dumps(["refill"]), "request:"),
]


def test_bad_commands_are_answered_by_field_and_change_nothing(tmp_path, hub):
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, sub=sub)
    try:
        before = command(sub, {"id": "before", "cmd": "stock"})["result"]
        for raw, field in BAD_COMMANDS:
            answer = command(sub, raw)
            assert answer["ok"] is False and answer["error"].startswith(field), (raw[:40], answer)
        after = command(sub, {"id": "after", "cmd": "stock"})["result"]
        before.pop("ts"), after.pop("ts")
        assert after == before
        first = command(sub, {"id": "once", "cmd": "disable", "slot": 2})
        command(sub, {"id": "twice", "cmd": "enable", "slot": 2})
        assert command(sub, {"id": "once", "cmd": "disable", "slot": 2}) == first
        assert command(sub, {"id": "s", "cmd": "stock"})["result"]["slots"][1]["status"] != "disabled"
        assert daemon.proc.poll() is None
    finally:
        assert daemon.terminate() == 0


def test_a_broker_outage_queues_everything_and_it_all_arrives_after(tmp_path, hub):
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, sub=sub)
    try:
        load_and_fill(tmp_path, sub)
        sub.close()
        broker.stop()
        for button in (1, 2, 2):
            ask(tmp_path / "sim.sock", {"op": "press", "button": button})
        ask(tmp_path / "sim.sock", {"op": "door", "open": True})
        ask(tmp_path / "sim.sock", {"op": "door", "open": False})
        broker.start()
        sub = Subscriber(broker.port)
        sub.wait_for(lambda m: {"door_open", "door_closed"} <= {
            e["type"] for e in sub.payloads("event")}, timeout=30)
        sub.wait_for(lambda m: sub.payloads("availability")[-1:] == ["online"])
    finally:
        assert daemon.terminate() == 0
    sub.wait_for(lambda m: sub.payloads("usage"))
    totals, _ = usage_totals(sub.payloads("usage"))
    assert totals == {"syringe-1ml": 1, "foil": 2}
    sub.close()


def test_commands_sent_while_the_machine_is_away_arrive_when_it_is_back(tmp_path, hub):
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, sub=sub)
    daemon.kill()
    sub.wait_for(lambda m: sub.payloads("availability")[-1:] == ["offline"])  # the last will
    sub.publish(f"{ROOT_TOPIC}/cmd", json.dumps({"id": "while-away", "cmd": "disable", "slot": 3}))
    daemon = DaemonProcess(tmp_path / "nspvend.toml")
    try:
        sub.wait_for(lambda m: any(r.get("id") == "while-away" for r in sub.payloads("result")))
        [answer] = [r for r in sub.payloads("result") if r["id"] == "while-away"]
        assert answer["ok"] is True
    finally:
        assert daemon.terminate() == 0


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_kill_9_between_a_vend_and_its_puback_counts_every_pack_once(tmp_path, hub, protocol):
    # The truth must outlive the daemon: the board simulator is its own process.
    broker, sub = hub
    config = tmp_path / "nspvend.toml"
    config.write_text(SERIAL_CONFIG.replace("[database]", f'[mqtt]\nhost = "127.0.0.1"\nport = '
                                            f'{broker.port}\nprotocol = "{protocol}"\n\n[database]'))
    board = BoardProcess(tmp_path)
    for slot in (1, 2, 3):
        board.ask({"op": "load", "slot": slot, "count": 40})
    daemon = DaemonProcess(config)
    wait_online(sub)
    topic = "nspvend/serial-01"
    sub.publish(f"{topic}/cmd", json.dumps({"id": "fill", "cmd": "refill", "all": True}))
    sub.wait_for(lambda m: any(r.get("id") == "fill" for r in sub.payloads("result")))
    rng = random.Random(7)
    logs: list[str] = []
    try:
        for cycle in range(6):
            for _ in range(rng.randint(1, 3)):
                board.ask({"op": "press", "button": rng.choice([1, 2])})
                time.sleep(rng.uniform(0, 0.15))  # a person's pace; the kill lands anywhere
            if cycle % 3 == 1:
                assert daemon.terminate() == 0  # graceful: the bucket is sent at once
            else:
                daemon.kill()  # mid-vend, mid-commit, mid-publish: the next start sends it
            if cycle == 3:
                broker.restart()
            logs.extend(daemon.log)
            daemon = DaemonProcess(config)
        board.settled()
        assert daemon.terminate() == 0
        logs.extend(daemon.log)
        truth = board.ask({"op": "state"})
        dropped = {"syringe-1ml": truth["slots"][0]["packs_dropped"]
                   + truth["slots"][1]["packs_dropped"],
                   "foil": truth["slots"][2]["packs_dropped"]}
        want = {p: n for p, n in dropped.items() if n}
        assert want
        try:
            sub.wait_for(lambda m: usage_totals(sub.payloads("usage"))[0] == want, timeout=30)
        except AssertionError:
            raise AssertionError(f"hub has {usage_totals(sub.payloads('usage'))}, "
                                 f"dropped {want}; the daemons said:\n" + "".join(logs)) from None
        unconfirmed = sum(sum(u["unconfirmed"].values()) for u in sub.payloads("usage"))
        assert unconfirmed == 0  # the board outlived every kill, so every outcome was learnt
    finally:
        board.stop()


def test_a_vend_publishes_nothing_at_once_even_when_a_slot_turns_low_or_empty(tmp_path, hub):
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, sub=sub)  # hour-long buckets: none closes here
    try:
        ask(tmp_path / "sim.sock", {"op": "load", "slot": 3, "count": 3})
        command(sub, {"id": "r", "cmd": "refill", "slot": 3, "count": 3})  # low_at is 2
        sub.wait_for(lambda m: sub.payloads("stock")[-1]["products"]["foil"]["count"] == 3)
        heard = len(sub.messages)
        for _ in range(4):  # 3 -> 2 low, 1, 0 empty, and one at an empty slot
            ask(tmp_path / "sim.sock", {"op": "press", "button": 2})
        assert command(sub, {"id": "s", "cmd": "stock"})["result"]["products"]["foil"] == {
            "count": 3, "status": "ok", "name": "foil"}  # what was published, not the live count
        time.sleep(1.0)
        topics = [t for t, _, _ in sub.messages[heard:]]
        assert topics == [f"{ROOT_TOPIC}/cmd", f"{ROOT_TOPIC}/cmd/result"], topics
        status = ask(tmp_path / "control.sock", {"id": "l", "cmd": "status"})["result"]
        assert status["stock"]["products"]["foil"] == {"count": 0, "status": "empty",
                                                       "name": "foil"}  # staff see it
    finally:
        assert daemon.terminate() == 0


def test_home_assistant_discovery_describes_the_machine_from_its_own_topics(tmp_path, hub):
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, "homeassistant = true", sub=sub)
    try:
        # the discovery messages go out before state and stock: once stock is here, they are
        # retained at the broker, and Home Assistant starting later gets them all
        sub.wait_for(lambda m: sub.payloads("stock"))
        stock, state = sub.payloads("stock")[-1], sub.payloads("state")[-1]
        discovery = Subscriber(broker.port, "homeassistant/#")
        configs = discovery.wait_for(lambda m: len(m) >= 7)
    finally:
        assert daemon.terminate() == 0
        discovery.close()
    unique_ids = set()
    for topic, payload, retained in configs:
        assert retained
        component, node, key, leaf = topic.split("/")[1:]
        assert component in ("sensor", "binary_sensor") and node == "e2e-01" and leaf == "config"
        body = json.loads(payload)
        unique_ids.add(body["unique_id"])
        assert body["availability_topic"] == f"{ROOT_TOPIC}/availability"
        assert body["state_topic"] in (f"{ROOT_TOPIC}/state", f"{ROOT_TOPIC}/stock")
        assert body["device"]["identifiers"] == ["nspvend_e2e-01"]
        # every value the template reads is in the payload it reads it from
        source = stock if body["state_topic"].endswith("/stock") else state
        template = body["value_template"]
        for product in stock["products"]:
            if f"products['{product}']" in template:
                assert source["products"][product]["count"] is not None
        for field in ("mode", "faults", "temperature_c", "door", "sharps_bin"):
            if f"value_json.{field}" in template:
                assert field in source
    assert len(unique_ids) == len(configs)
    assert {json.loads(p)["name"] for _, p, _ in configs} >= {
        "1ml syringes x10 in stock", "foil in stock", "Mode", "Door", "Sharps bin full"}


def test_nspvend_watch_prints_stock_events_and_usage_of_every_machine(tmp_path, hub):
    import subprocess
    import sys
    import threading

    from tests.daemon_process import ROOT

    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, sub=sub)
    watch = subprocess.Popen([sys.executable, "-m", "controller", "watch", "--config",
                              str(tmp_path / "nspvend.toml")], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    seen = threading.Condition()

    def read() -> None:
        for line in watch.stdout:
            with seen:
                lines.append(line)
                seen.notify_all()

    threading.Thread(target=read, daemon=True).start()

    def wait_line(text: str) -> str:
        with seen:
            assert seen.wait_for(lambda: any(text in x for x in lines), 20), "".join(lines)
            return next(x for x in lines if text in x)

    try:
        assert "e2e-01 stock syringe-1ml 0 empty, foil 0 empty" in wait_line("e2e-01 stock")
        assert "in_service" in wait_line("e2e-01 state")
        load_and_fill(tmp_path, sub)
        wait_line("e2e-01 event refilled")
        wait_line("syringe-1ml 40 ok, foil 10 ok")
        ask(tmp_path / "sim.sock", {"op": "press", "button": 1})
        command(sub, {"id": "w1", "cmd": "set_mode", "mode": "bogus"})
        assert "refused: mode:" in wait_line("e2e-01 command w1")
    finally:
        assert daemon.terminate() == 0
    try:
        assert "syringe-1ml 1" in wait_line("e2e-01 usage")
        wait_line("e2e-01 offline")
    finally:
        watch.terminate()
        watch.wait(10)


def test_nspvend_watch_says_plainly_when_the_hub_is_unreachable(tmp_path):
    from tests.broker import free_port
    from tests.daemon_process import nspvend

    result = nspvend("watch", "--host", "127.0.0.1", "--port", str(free_port()))
    assert result.returncode == 69
    assert result.stderr.startswith("nspvend: cannot reach the hub at 127.0.0.1:")


def test_home_assistant_forgets_a_removed_product_and_everything_when_switched_off(tmp_path, hub):
    """Home Assistant forgets an entity when its config topic gets an empty retained payload:
    the machine sends one for each config it announced before and does not now."""
    broker, sub = hub
    daemon = start_machine(tmp_path, broker.port, "homeassistant = true", sub=sub)
    sub.wait_for(lambda m: sub.payloads("stock"))
    assert daemon.terminate() == 0

    def retained() -> dict[str, bytes]:
        discovery = Subscriber(broker.port, "homeassistant/#")
        try:
            # a retained marker published after the configs: once it is here, all have come
            discovery.client.publish("homeassistant/marker", b"x", qos=1,
                                     retain=True).wait_for_publish(10)
            found = discovery.wait_for(lambda m: any(t == "homeassistant/marker" for t, _, _ in m))
            discovery.client.publish("homeassistant/marker", b"", qos=1,
                                     retain=True).wait_for_publish(10)
        finally:
            discovery.close()
        return {t: p for t, p, _ in found if t != "homeassistant/marker" and p}

    before = retained()
    foil = [t for t in before if "foil" in t]
    assert foil and len(before) >= 7
    config = tmp_path / "nspvend.toml"
    mqtt = {"host": "127.0.0.1", "port": broker.port, "state_interval_s": 600,
            "homeassistant": True}
    no_foil = dict(sim={"control": "sim.sock"}, database={"path": "data/nspvend.db"},
                   control={"socket": "control.sock"},
                   products=[{"id": "syringe-1ml", "name": "1ml syringes x10", "button": 1}],
                   slots=[{"slot": n, "product": "syringe-1ml", "capacity": 20, "low_at": 5}
                          for n in (1, 2, 3)])
    config.write_text(machine_toml("e2e-01", "sim", mqtt=mqtt, **no_foil))  # foil gone

    def run_once_more(runs: int) -> None:
        """Start the daemon, wait until it is online for the ``runs``-th time and has said
        its stock (after its discovery), and stop it."""
        stocks = len(sub.payloads("stock"))
        daemon = DaemonProcess(config)
        sub.wait_for(lambda m: sub.payloads("availability").count("online") >= runs
                     and len(sub.payloads("stock")) > stocks)
        assert daemon.terminate() == 0

    run_once_more(2)
    after = retained()
    assert not [t for t in after if "foil" in t] and set(after) == set(before) - set(foil)
    config.write_text(machine_toml("e2e-01", "sim", mqtt={**mqtt, "homeassistant": False},
                                   **no_foil))
    run_once_more(3)
    assert retained() == {}

"""An independent client of the hub, written from docs/hub.md alone (no nspvend code): it
publishes as several machines, with a bucket sent twice, garbage, and a machine that dies,
then reads the hub's JSON and CSV as a program would."""

from __future__ import annotations

import json
import socket

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import MOSQUITTO
from tests.test_hub import Hub, wait

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")


def machine(port: int, machine_id: str) -> mqtt.Client:
    """A machine as docs/hub.md describes it: retained availability with an offline last will."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"spec-{machine_id}")
    client.will_set(f"nspvend/{machine_id}/availability", "offline", qos=1, retain=True)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def send(client: mqtt.Client, topic: str, payload: object, retain: bool = False) -> None:
    body = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    client.publish(topic, body, qos=1, retain=retain).wait_for_publish(10)


def state(mode: str = "in_service", faults: list | None = None) -> dict:
    return {"schema": 1, "mode": mode, "door": "closed", "sharps_bin": "ok", "temperature_c": 12.5,
            "faults": faults or [], "version": "spec", "uptime_s": 60, "clock_synced": True,
            "ts": "2026-11-24T10:00:00Z"}


def stock(syringes: int, foil: int) -> dict:
    return {"schema": 1, "ts": "2026-11-24T10:00:00Z",
            "slots": [{"slot": 1, "product": "syringe-1ml", "count": syringes, "capacity": 20,
                       "low_at": 5, "status": "ok" if syringes > 5 else "low"},
                      {"slot": 2, "product": "foil", "count": foil, "capacity": 10, "low_at": 2,
                       "status": "ok" if foil > 2 else "low"}],
            "products": {"syringe-1ml": {"count": syringes, "status": "ok" if syringes > 5
                                         else "low"},
                         "foil": {"count": foil, "status": "ok" if foil > 2 else "low"}}}


def usage(bucket: str, hour: int, syringes: int, foil: int, unconfirmed: int = 0) -> dict:
    return {"schema": 1, "id": bucket, "start": f"2026-11-24T{hour:02d}:00:00Z",
            "end": f"2026-11-24T{hour + 1:02d}:00:00Z",
            "counts": {"syringe-1ml": syringes, "foil": foil},
            "unconfirmed": {"syringe-1ml": unconfirmed, "foil": 0}, "clock_synced": True}


def test_a_client_written_from_the_spec_is_kept_counted_once_and_read_back(tmp_path):
    hub = Hub(tmp_path, machines=("spec-one", "spec-two", "spec-doomed"))
    try:
        port = hub.broker.port
        one, two, doomed = (machine(port, m) for m in ("spec-one", "spec-two", "spec-doomed"))
        for client, machine_id, s in ((one, "spec-one", stock(15, 8)),
                                      (two, "spec-two", stock(3, 1)),
                                      (doomed, "spec-doomed", stock(9, 9))):
            root = f"nspvend/{machine_id}"
            send(client, f"{root}/availability", "online", retain=True)
            send(client, f"{root}/state", state(), retain=True)
            send(client, f"{root}/stock", s, retain=True)
        send(one, "nspvend/spec-one/usage", usage("b-one-1", 1, 4, 2))
        send(one, "nspvend/spec-one/usage", usage("b-one-1", 1, 4, 2))  # sent twice
        send(one, "nspvend/spec-one/usage", usage("b-one-2", 2, 1, 0, unconfirmed=1))
        send(two, "nspvend/spec-two/usage", usage("b-two-1", 1, 7, 3))
        send(two, "nspvend/spec-two/event", {"schema": 1, "id": "e-1", "ts": "2026-11-24T10:00:00Z",
                                            "type": "jam", "slot": 1, "product": "syringe-1ml"})
        # garbage: not JSON, another schema, the wrong types, a topic no machine has
        send(two, "nspvend/spec-two/usage", b"\xff not json")
        send(two, "nspvend/spec-two/usage", {**usage("b-bad", 3, 1, 1), "schema": 2})
        send(two, "nspvend/spec-two/usage", {**usage("b-bad2", 3, 1, 1), "counts": {"foil": -5}})
        send(two, "nspvend/spec-two/state", {**state(), "faults": "all of them"})
        send(two, "nspvend/Not A Machine/usage", usage("b-bad3", 3, 1, 1))
        send(two, "nspvend/spec-two/telemetry", {"schema": 1})
        # what passes a glance but no database keeps: a 99th month, a count past any integer
        # column, a NUL, an id longer than an index entry, an event's slot past 2**31
        send(two, "nspvend/spec-two/usage", {**usage("b-bad4", 3, 1, 1),
                                             "start": "2026-99-99T99:99:99Z"})
        send(two, "nspvend/spec-two/usage", {**usage("b-bad5", 3, 1, 1),
                                             "counts": {"syringe-1ml": 2**40, "foil": 0}})
        send(two, "nspvend/spec-two/usage", usage("b-bad6\u0000", 3, 1, 1))
        send(two, "nspvend/spec-two/usage", usage("b" * 5000, 3, 1, 1))
        send(two, "nspvend/spec-two/event", {"schema": 1, "id": "e-2", "ts": "2026-11-24T10:00:00Z",
                                            "type": "jam", "slot": 2**40})
        send(one, "nspvend/spec-one/usage", usage("b-one-3", 4, 2, 0))  # after them all
        # a machine that dies: its connection drops without a goodbye
        doomed._sock.shutdown(socket.SHUT_RDWR)

        client = hub.client("val")
        want = {("spec-one", "syringe-1ml"): ("7", "1"), ("spec-one", "foil"): ("2", "0"),
                ("spec-two", "syringe-1ml"): ("7", "0"), ("spec-two", "foil"): ("3", "0")}

        def csv_now() -> dict:
            rows = client.csv("/reports/usage.csv?from=2026-11-24&to=2026-11-25")
            return {(r["machine"], r["product"]): (r["confirmed"], r["unconfirmed"]) for r in rows}

        wait(lambda: csv_now() == want, 30, f"the CSV says {want}")
        header = client.get("/reports/usage.csv?from=2026-11-24&to=2026-11-25")[2].splitlines()[0]
        assert header.startswith("machine,product,confirmed,unconfirmed")
        assert client.csv("/reports/usage.csv?from=2026-11-25&to=2026-11-26") == []

        def machines() -> dict:
            return {m["id"]: m for m in client.json("/api/machines")}

        wait(lambda: machines().get("spec-doomed", {}).get("online") is False, 30,
             "the dead machine offline")
        found = machines()
        assert {"spec-one", "spec-two", "spec-doomed"} <= set(found)
        assert "Not A Machine" not in found
        one_ = found["spec-one"]
        assert one_["online"] is True and one_["mode"] == "in_service" and one_["faults"] == []
        assert one_["stock"]["products"]["foil"] == {"count": 8, "status": "ok"}
        assert set(one_) >= {"id", "name", "online", "last_heard", "mode", "faults", "stock"}
        assert found["spec-two"]["faults"] == []  # the garbage state was not taken
        assert hub.process.proc.poll() is None
        assert any("does not keep the contract" in line for line in hub.process.log)
        for c in (one, two):
            c.loop_stop()
    finally:
        hub.close()


def test_a_state_may_say_its_board_firmware_and_only_as_a_short_version():
    from controller.messages import BadMessage, StateMessage

    base = {"schema": 1, "mode": "in_service", "door": "closed", "sharps_bin": "ok",
            "temperature_c": None, "faults": [], "version": "0.3.0", "uptime_s": 1,
            "clock_synced": True, "ts": "2026-12-01T10:00:00Z"}
    assert StateMessage.read(base).board_firmware is None  # older machines say nothing
    said = StateMessage.read({**base, "board_firmware": "4"})
    assert said.board_firmware == "4" and StateMessage.read(said.encode()) == said
    assert "board_firmware" not in StateMessage.read(base).payload()
    for bad in ("", "x" * 41, "4; rm -rf", 4):
        with pytest.raises(BadMessage, match="board_firmware"):
            StateMessage.read({**base, "board_firmware": bad})

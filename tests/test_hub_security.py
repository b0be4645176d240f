"""TLS, passwords, client certificates and the example ACL, on a real Mosquitto.

The broker runs ``examples/mosquitto/nspvend.conf`` and ``nspvend.acl`` as shipped; only
the file paths and the port are changed for the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import MOSQUITTO, Broker, Subscriber, free_port
from tests.daemon_process import ROOT, DaemonProcess
from tests.pki import OPENSSL, Pki
from tests.test_daemon_cli import CONFIG as SIM_CONFIG

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or OPENSSL is None or shutil.which("mosquitto_passwd") is None,
    reason="mosquitto (with mosquitto_passwd) or openssl not installed")

EXAMPLES = ROOT / "examples" / "mosquitto"
MACHINE = "e2e-01"
PASSWORDS = {"hub": "hub-secret", MACHINE: "machine-secret", "other-02": "other-secret",
             "watch": "watch-secret", "site-hackney": "site-secret"}


class SecureHub:
    """The example broker: a password listener and a client-certificate listener."""

    def __init__(self, folder: Path) -> None:
        self.pki = Pki(folder / "pki")
        self.port, self.cert_port = free_port(), free_port()
        passwd = folder / "nspvend.passwd"
        for i, (user, password) in enumerate(PASSWORDS.items()):
            subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd),
                            user, password], check=True, capture_output=True, timeout=30)
        text = (EXAMPLES / "nspvend.conf").read_text()
        for key, value in {"password_file": passwd, "acl_file": EXAMPLES / "nspvend.acl",
                           "cafile": self.pki.ca, "certfile": self.pki.server_cert,
                           "keyfile": self.pki.server_key}.items():
            text, n = re.subn(rf"^{key} .*$", f"{key} {value}", text, flags=re.M)
            assert n >= 1, key
        text = re.sub(r"^persistence_location .*\n", "", text, flags=re.M)
        text = text.replace("listener 8883", f"listener {self.port} 127.0.0.1")
        text += (f"\nlistener {self.cert_port} 127.0.0.1\ncafile {self.pki.ca}\n"
                 f"certfile {self.pki.server_cert}\nkeyfile {self.pki.server_key}\n"
                 "require_certificate true\nuse_identity_as_username true\n")
        self.broker = Broker(folder / "broker", listener=text)

    def client(self, user: str, protocol: int = mqtt.MQTTv5) -> Client:
        return Client(self, user, PASSWORDS[user], protocol)

    def subscriber(self, topic: str = "nspvend/#") -> Subscriber:
        return Subscriber(self.port, topic, username="hub", password=PASSWORDS["hub"],
                          tls_ca=str(self.pki.ca), host="127.0.0.1")


class Client:
    """An MQTT 5 client that reports the broker's reason codes."""

    def __init__(self, hub: SecureHub, user: str, password: str, protocol: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.username_pw_set(user, password)
        self.client.tls_set(ca_certs=str(hub.pki.ca))
        self.connack: list = []
        self.subacks: list = []
        self.messages: list[tuple[str, bytes]] = []
        self.event = threading.Condition()

        def on_connect(c, u, flags, reason, props) -> None:
            with self.event:
                self.connack.append(reason)
                self.event.notify_all()

        def on_subscribe(c, u, mid, reasons, props) -> None:
            with self.event:
                self.subacks.append(reasons)
                self.event.notify_all()

        def on_message(c, u, message) -> None:
            with self.event:
                self.messages.append((message.topic, message.payload))
                self.event.notify_all()

        self.client.on_connect, self.client.on_subscribe = on_connect, on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", hub.port)
        self.client.loop_start()
        self.wait(lambda: self.connack)

    def wait(self, predicate, timeout: float = 10) -> None:
        with self.event:
            assert self.event.wait_for(predicate, timeout), "the broker never answered"

    def publish(self, topic: str, payload: str) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (MQTT 5)."""
        codes: list[int] = []
        done = threading.Event()

        def on_publish(c, u, mid, reason, props) -> None:
            codes.append(reason.value)
            done.set()

        self.client.on_publish = on_publish
        self.client.publish(topic, payload, qos=1)
        assert done.wait(10)
        return codes[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


NOT_AUTHORIZED = 0x87  # reason codes below 0x80 mean accepted (0x10: nobody subscribed)


@pytest.fixture(scope="module")
def secure_hub(tmp_path_factory):
    hub = SecureHub(tmp_path_factory.mktemp("secure-hub"))
    yield hub
    hub.broker.kill()


def machine_config(tmp: Path, hub: SecureHub, mqtt_lines: str) -> Path:
    path = tmp / "nspvend.toml"
    path.write_text(SIM_CONFIG.replace("[database]", f'[mqtt]\nhost = "127.0.0.1"\n'
                                       f'ca_file = "{hub.pki.ca}"\n{mqtt_lines}\n[database]'))
    return path


def test_a_machine_logs_in_over_tls_with_its_password_and_the_hub_commands_it(tmp_path, secure_hub):
    hub = secure_hub
    (tmp_path / "mqtt-password").write_text(PASSWORDS[MACHINE] + "\n")
    config = machine_config(tmp_path, hub, f'port = {hub.port}\nusername = "{MACHINE}"\n'
                                           'password_file = "mqtt-password"\nprotocol = "5"')
    sub = hub.subscriber(f"nspvend/{MACHINE}/#")
    daemon = DaemonProcess(config)
    try:
        sub.wait_for(lambda m: sub.payloads("availability")[-1:] == ["online"])
        sub.publish(f"nspvend/{MACHINE}/cmd", json.dumps({"id": "tls-1", "cmd": "disable",
                                                          "slot": 2}))
        sub.wait_for(lambda m: any(r.get("id") == "tls-1" for r in sub.payloads("result")))
        assert [r["ok"] for r in sub.payloads("result") if r["id"] == "tls-1"] == [True]
        sub.wait_for(lambda m: sub.payloads("stock")[-1]["slots"][1]["status"] == "disabled")
    finally:
        assert daemon.terminate() == 0
        sub.close()


def test_a_machine_logs_in_with_a_client_certificate(tmp_path, secure_hub):
    hub = secure_hub
    cert, key = hub.pki.issue(MACHINE)
    config = machine_config(tmp_path, hub, f'port = {hub.cert_port}\ncert_file = "{cert}"\n'
                                           f'key_file = "{key}"')
    sub = hub.subscriber(f"nspvend/{MACHINE}/availability")
    daemon = DaemonProcess(config)
    try:
        sub.wait_for(lambda m: sub.payloads("availability")[-1:] == ["online"])
    finally:
        assert daemon.terminate() == 0
    sub.wait_for(lambda m: sub.payloads("availability")[-1:] == ["offline"])
    sub.close()


def test_a_wrong_password_or_no_account_is_refused(secure_hub):
    for user, password in ((MACHINE, "guess"), ("nobody", "x")):
        client = Client(secure_hub, user, password, mqtt.MQTTv5)
        assert client.connack[0].is_failure, (user, client.connack)
        client.close()


def test_the_acl_confines_a_machine_to_its_own_root(secure_hub):
    hub = secure_hub
    watcher = hub.subscriber("nspvend/#")
    device = hub.client(MACHINE)
    try:
        # another machine's root, and commanding another machine: refused by the broker
        assert device.publish("nspvend/other-02/usage", '{"forged":true}') == NOT_AUTHORIZED
        assert device.publish("nspvend/other-02/cmd", '{"id":"x","cmd":"set_mode"}') == \
            NOT_AUTHORIZED
        assert device.publish("nspvend/e2e-01/cmd", '{"id":"x","cmd":"set_mode"}') == \
            NOT_AUTHORIZED  # a machine does not command, not even itself
        assert device.publish("homeassistant/sensor/other-02/x/config", "{}") == NOT_AUTHORIZED
        # its own root: accepted, and seen by the hub after the refused ones (same sender,
        # in order), which therefore never reached it
        assert device.publish(f"nspvend/{MACHINE}/event", '{"marker":1}') < 0x80
        assert device.publish(f"homeassistant/sensor/{MACHINE}/x/config", "{}") < 0x80
        watcher.wait_for(lambda m: any(t == f"nspvend/{MACHINE}/event" for t, _, _ in m))
        assert [t for t, _, _ in watcher.messages if "other-02" in t] == []

        # it reads its own commands, never another machine's
        device.client.subscribe("nspvend/+/cmd", qos=1)
        device.wait(lambda: device.subacks)
        hub_client = hub.client("hub")
        assert hub_client.publish("nspvend/other-02/cmd", '{"id":"a","cmd":"status"}') < 0x80
        assert hub_client.publish(f"nspvend/{MACHINE}/cmd", '{"id":"b","cmd":"status"}') < 0x80
        device.wait(lambda: any(t == f"nspvend/{MACHINE}/cmd" for t, _ in device.messages))
        assert [t for t, _ in device.messages] == [f"nspvend/{MACHINE}/cmd"]
        # and the hub may not speak as a machine
        assert hub_client.publish(f"nspvend/{MACHINE}/usage", "{}") == NOT_AUTHORIZED
        hub_client.close()
        # staff watching read every machine and command none
        watching = hub.client("watch")
        watching.client.subscribe("nspvend/#", qos=1)
        watching.wait(lambda: watching.subacks)
        assert watching.publish(f"nspvend/{MACHINE}/cmd", '{"id":"w","cmd":"status"}') == \
            NOT_AUTHORIZED
        assert device.publish(f"nspvend/{MACHINE}/event", '{"marker":2}') < 0x80
        watching.wait(lambda: any(t == f"nspvend/{MACHINE}/event" for t, _ in watching.messages))
        assert [t for t, _ in device.messages] == [f"nspvend/{MACHINE}/cmd"]  # nothing more
        watching.close()
    finally:
        device.close()
        watcher.close()


def test_the_hub_account_may_share_the_machines_messages_and_a_site_may_forward_them(secure_hub):
    """Several hub processes (a shared subscription) and a bridged site, under the ACL."""
    hub = secure_hub
    device = hub.client(MACHINE)
    hubs = [hub.client("hub") for _ in range(2)]
    try:
        for h in hubs:
            h.client.subscribe("$share/hubs/nspvend/+/usage", qos=1)
            h.wait(lambda h=h: h.subacks)
            assert all(r.value < 0x80 for r in h.subacks[0]), h.subacks
        for n in range(6):
            assert device.publish(f"nspvend/{MACHINE}/usage", f'{{"n":{n}}}') < 0x80
        for h in hubs:  # mosquitto hands a shared subscription's messages out in turn
            h.wait(lambda h=h: len(h.messages) == 3)
        assert sorted(p for h in hubs for _, p in h.messages) == [
            f'{{"n":{n}}}'.encode() for n in range(6)]
        site = hub.client("site-hackney")
        assert site.publish("nspvend/hackney-07/usage", '{"from":"site"}') < 0x80
        assert site.publish(f"nspvend/{MACHINE}/usage", '{"from":"site"}') == \
            NOT_AUTHORIZED  # a site speaks for its own machines, no other
        assert site.publish("nspvend/hackney-07/cmd/result", '{"id":"x","ok":true}') < 0x80
        assert site.publish("nspvend/hackney-07/cmd", '{"id":"x","cmd":"status"}') == \
            NOT_AUTHORIZED  # a site forwards commands down, never makes them
        site.client.subscribe("nspvend/+/cmd", qos=1)
        site.wait(lambda: site.subacks)
        assert hubs[0].publish("nspvend/hackney-07/cmd", '{"id":"y","cmd":"status"}') < 0x80
        site.wait(lambda: any(t == "nspvend/hackney-07/cmd" for t, _ in site.messages))
        site.close()
    finally:
        device.close()
        for h in hubs:
            h.close()

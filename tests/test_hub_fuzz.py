"""Thousands of random command payloads at the real daemon over a real Mosquitto.

Each payload goes to ``{root}/cmd``; the daemon must answer every one, stay up, and
answer exactly as the control socket's code does when given the same bytes (a reference
controller in this process, fed the same sequence). After every payload the two are
compared: a refused payload changed nothing, an accepted one changed the same things.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.commands import run_command
from controller.config import load_config
from controller.messages import MAX_COMMAND_BYTES, decode_request
from tests.broker import MOSQUITTO, Broker, Subscriber
from tests.conftest import Rig
from tests.daemon_process import DaemonProcess
from tests.test_commands import REQUESTS
from tests.test_hublink import ROOT_TOPIC, config_with_mqtt

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")


class Hub:
    """A subscriber that pairs each command it sends with the daemon's next answer."""

    def __init__(self, port: int) -> None:
        self.answers: list[dict] = []
        self.sent = 0
        self.cond = threading.Condition()
        self.sub = Subscriber(port, f"{ROOT_TOPIC}/cmd/result")
        self.sub.client.on_message = self._on_result

    def _on_result(self, client, userdata, message) -> None:
        with self.cond:
            self.answers.append(json.loads(message.payload))
            self.cond.notify_all()

    def send_all(self, payloads: list[bytes]) -> list[dict]:
        """Publish in a burst, as a busy hub might; the answers come back in order."""
        with self.cond:
            n = len(self.answers)
        for payload in payloads:
            self.sub.client.publish(f"{ROOT_TOPIC}/cmd", payload, qos=1)
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.answers) >= n + len(payloads), 30), \
                f"{len(payloads)} sent, {len(self.answers) - n} answered"
            return self.answers[n:n + len(payloads)]


@pytest.fixture(scope="module")
def fuzz_rig(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-hub")
    broker = Broker(folder / "broker")
    config = config_with_mqtt(folder, broker.port)
    reference_folder = tmp_path_factory.mktemp("fuzz-reference")
    (reference_folder / "nspvend.toml").write_text(config.read_text())
    reference = Rig(load_config(reference_folder / "nspvend.toml"))
    daemon = DaemonProcess(config)
    hub = Hub(broker.port)
    yield daemon, hub, reference
    hub.sub.close()
    assert daemon.terminate() == 0
    reference.stop()
    broker.kill()


def comparable(answer: dict) -> tuple:
    """What must agree between the daemon and the reference (timestamps may not)."""
    return answer["id"], answer["ok"], answer.get("error")


def observable(status: dict) -> tuple:
    state, stock = status["state"], status["stock"]
    return state["mode"], tuple(state["faults"]), json.dumps(stock["slots"], sort_keys=True)


PAYLOADS = (
    REQUESTS.map(lambda r: json.dumps(r).encode())
    | st.binary(max_size=64)
    | st.builds(lambda n: b"[" * n + b"]" * n, st.integers(1, 5000))  # deep nesting
    | st.just(b"{" + b" " * MAX_COMMAND_BYTES + b"}")  # oversize
)


def named_field(error: str, request: object) -> bool:
    field = error.split(":")[0]
    keys = set(request) if isinstance(request, dict) else set()
    arguments = {"request", "id", "cmd", "slot", "count", "all", "product", "capacity", "low_at",
                 "mode", "messages", "expires", "sig"}
    return field.split("[")[0] in arguments | keys


def test_thousands_of_random_payloads_over_mqtt_are_answered_like_the_socket(fuzz_rig):
    """One test, so it never depends on another having run first in the same process."""
    daemon, hub, reference = fuzz_rig

    @settings(max_examples=110, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(payloads=st.lists(PAYLOADS, min_size=8, max_size=24))
    def a_burst(payloads: list[bytes]) -> None:
        answers = hub.send_all(payloads)
        for payload, answer in zip(payloads, answers, strict=True):
            request, refusal = decode_request(payload)
            expected = (refusal if refusal is not None
                        else run_command(reference.vm, request, "hub"))
            assert comparable(answer) == comparable(expected), payload[:200]
            if not answer["ok"]:
                assert named_field(answer["error"], request), (answer["error"], payload[:200])
        [probe] = hub.send_all([json.dumps({"id": "probe", "cmd": "status"}).encode()])
        assert probe["ok"] and daemon.proc.poll() is None
        mirror = run_command(reference.vm, {"id": "probe", "cmd": "status"}, "hub")
        assert observable(probe["result"]) == observable(mirror["result"])
        hub.sent += len(payloads)

    a_burst()
    assert hub.sent >= 1000, hub.sent
    logging.getLogger(__name__).info("%d random payloads sent over MQTT", hub.sent)
    [answer] = hub.send_all([json.dumps({"id": "after-fuzz", "cmd": "stock"}).encode()])
    assert answer["ok"] and daemon.proc.poll() is None

"""The hub link: the machine as a well-behaved MQTT device (paho-mqtt 2.x).

Retained ``availability`` (with ``offline`` as the last will), ``state`` and
``stock``; ``usage`` and ``event`` messages from the SQLite outbox, deleted only
after the broker's PUBACK, oldest first; commands on ``{root}/cmd`` answered on
``{root}/cmd/result`` by the same code as the control socket.

paho runs its network thread; everything it reports (connected, acknowledged,
a command) is posted to the daemon's queue, so the ledger and the machine are
only touched by the core loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import controller
from controller.commands import Command
from controller.config import Config, MqttConfig, log_in
from controller.messages import (
    OFFLINE,
    ONLINE,
    TOPICS,
    compact,
    decode_request,
    home_assistant_configs,
    machine_root,
)
from controller.vending import Change, VendingMachine

log = logging.getLogger(__name__)

INFLIGHT = 20
SESSION_EXPIRY_S = 7 * 24 * 3600  # MQTT 5: commands wait at the broker for a week
STOP_FLUSH_S = 3.0


@dataclass(frozen=True)
class HubEvent:
    """Something the network thread saw, for the core loop to act on."""

    kind: str  # "connected", "disconnected", "acked", "forget", "refused"
    mid: int = 0
    detail: str = ""
    answer: dict | None = None  # "refused": the answer to an unreadable command


class HubLink:
    """One machine's MQTT session with the hub.

    Parameters: the validated ``config`` (with an ``[mqtt]`` table); the
    ``machine``; ``post`` puts an event on the daemon's queue.
    """

    def __init__(self, config: Config, machine: VendingMachine,
                 post: Callable[[Any], None]) -> None:
        assert config.mqtt is not None
        self.config, self.mqtt_config = config, config.mqtt
        self.machine, self.ledger, self.post = machine, machine.ledger, post
        self.writes = machine.writes
        self.root = machine_root(config.mqtt.prefix, config.machine_id)
        self.connected = False
        self.inflight: dict[int, tuple[int, mqtt.MQTTMessageInfo]] = {}  # mid -> (row, info)
        self.acked: list[int] = []  # rows the broker has, to be deleted in the next batch
        self._forget_posted = False
        self._last_stock = self._last_state = float("-inf")
        self._session = threading.Event()  # set by the network thread while connected
        self.client = self._make_client(config.mqtt)

    # -- the paho client --------------------------------------------------------
    def _make_client(self, cfg: MqttConfig) -> mqtt.Client:
        v5 = cfg.protocol == "5"
        client_id = f"nspvend-{self.config.machine_id}"
        if v5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                 clean_session=False, protocol=mqtt.MQTTv311)
        client.will_set(f"{self.root}/availability", OFFLINE, qos=1, retain=True)
        log_in(client, cfg, cfg.password())
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.max_inflight_messages_set(INFLIGHT)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        cfg = self.mqtt_config
        kwargs: dict[str, Any] = {}
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, **kwargs)
        self.client.loop_start()
        log.info("connecting to the hub at %s:%d as %s", cfg.host, cfg.port, self.root)

    def stop(self, unsaved: list[dict] = ()) -> int:
        """Send what can be sent in a few seconds, say ``offline``, and disconnect.

        A stop soon after a start may come before the first connection: give it those
        few seconds too, so a closed bucket does not wait for the next start. ``unsaved``
        are usage messages the card could not keep: sent straight to the hub (their ids
        are the buckets', so one that also comes later from the outbox counts once).
        Returns how many of them the broker acknowledged.
        """
        self._forget()
        sent = 0
        if self._session.wait(STOP_FLUSH_S):
            self._flush(STOP_FLUSH_S)
            sent = self._send_unsaved(unsaved)
            info = self.client.publish(f"{self.root}/availability", OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        return sent

    def _send_unsaved(self, unsaved: list[dict]) -> int:
        infos = [self.client.publish(f"{self.root}/usage", compact(usage), qos=1)
                 for usage in unsaved]
        deadline = time.monotonic() + STOP_FLUSH_S
        acked = 0
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                continue
            acked += info.is_published()
        return acked

    # -- network thread: only post ------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("the hub refused the connection: %s", reason)
            return
        client.subscribe(f"{self.root}/cmd", qos=1)
        self._session.set()
        self.post(HubEvent("connected", detail=str(reason)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._session.clear()
        self.post(HubEvent("disconnected", detail=str(reason)))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self.post(HubEvent("acked", mid=mid))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            request, refusal = decode_request(message.payload)
            if refusal is not None:  # answered in turn, after the commands before it
                self.post(HubEvent("refused", answer=refusal))
            else:
                self.post(Command(request, reply=self._answer, origin="hub"))
        except Exception:  # an exception here would end paho's network thread
            log.exception("a message on %s could not be handled", message.topic)

    def _answer(self, answer: dict) -> None:
        self.client.publish(f"{self.root}/cmd/result", compact(answer), qos=1)

    # -- core loop ----------------------------------------------------------------
    def handle(self, event: HubEvent) -> None:
        if event.kind == "connected":
            self.connected = True
            self.inflight.clear()  # whatever was in flight is sent again, oldest first
            log.info("connected to the hub (%s)", event.detail)
            self._publish("availability", ONLINE)
            self._announce_to_home_assistant()
            self.publish_state()
            self.publish_stock()
            self.drain()
        elif event.kind == "disconnected":
            if self.connected:
                log.warning("lost the hub (%s); queueing until it is back", event.detail)
            self.connected = False
        elif event.kind == "refused":
            self._answer(event.answer)
        elif event.kind == "acked":
            sent = self.inflight.pop(event.mid, None)
            if sent is not None:
                self.acked.append(sent[0])
                if not self._forget_posted:  # after the acks already queued: one transaction
                    self._forget_posted = True
                    self.post(HubEvent("forget"))
                self.drain()
        elif event.kind == "forget":
            self._forget_posted = False
            self._forget()

    def _forget(self) -> None:
        """Delete what the broker has acknowledged, in one transaction (fewer card writes)."""
        rows, self.acked = self.acked, []
        if rows:
            self.writes.write(lambda now: self.ledger.delete_outbox(*rows))

    def changed(self, kind: Change) -> None:
        """The machine says the hub should hear something (``VendingMachine.on_change``)."""
        if kind is Change.STATE:
            self.publish_state()
        elif kind is Change.STOCK:
            self.publish_stock()
        elif kind is Change.BUCKET:
            # A bucket closed: its usage and what its vends caused (the outbox, in order), then
            # state and stock as at the close, stamped with its end, the same way every time.
            # Stock goes at most every stock_interval_s unless the close changed a status.
            self.drain()
            at = self.machine.closed_at
            self.publish_state(at)
            interval = self.mqtt_config.stock_interval_s or 0
            if self.machine.closed_news or time.monotonic() - self._last_stock >= interval - 1:
                self.publish_stock(at)
        elif kind is Change.EVERYTHING:
            self.publish_state()
            self.publish_stock()
        elif kind is Change.OUTBOX:
            self.drain()

    def tick(self) -> None:
        if time.monotonic() - self._last_state >= self.mqtt_config.state_interval_s:
            self.publish_state()

    def publish_state(self, at: datetime | None = None) -> None:
        if self._publish("state", compact(self.machine.state_report(public=True, at=at))):
            self._last_state = time.monotonic()

    def publish_stock(self, at: datetime | None = None) -> None:
        if self._publish("stock", compact(self.machine.stock_report(public=True, at=at))):
            self._last_stock = time.monotonic()

    def _publish(self, leaf: str, payload: str) -> bool:
        if not self.connected:
            return False
        topic = TOPICS[leaf]
        info = self.client.publish(f"{self.root}/{leaf}", payload, qos=topic.qos,
                                   retain=topic.retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def drain(self) -> None:
        """Send queued usage and events, oldest first, a window at a time."""
        if not self.connected or len(self.inflight) >= INFLIGHT:
            return
        sent = {row for row, _ in self.inflight.values()} | set(self.acked)
        for row, kind, payload in self.ledger.outbox(limit=INFLIGHT + len(sent)):
            if row in sent:
                continue
            info = self.client.publish(f"{self.root}/{kind}", payload, qos=1, retain=False)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            self.inflight[info.mid] = (row, info)
            if len(self.inflight) >= INFLIGHT:
                return

    def _flush(self, seconds: float) -> None:
        """At shutdown, with the core loop ended: send the rest of the outbox and wait for
        the broker's acknowledgements (those of messages already in flight too)."""
        deadline = time.monotonic() + seconds
        pending = list(self.inflight.values())
        sent = {row for row, _ in pending}
        for row, kind, payload in self.ledger.outbox(limit=1000):
            if row not in sent:
                pending.append((row, self.client.publish(f"{self.root}/{kind}", payload, qos=1)))
        self.inflight.clear()
        for row, info in pending:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                continue
            if info.is_published():
                self.writes.write(lambda now, row=row: self.ledger.delete_outbox(row))

    # -- Home Assistant -------------------------------------------------------------
    def _announce_to_home_assistant(self) -> None:
        """Home Assistant's discovery configs, retained (``mqtt.homeassistant``); and an empty
        retained payload for each one announced before and not wanted now (a product removed,
        or ``homeassistant = false``), which is how Home Assistant forgets an entity. What was
        announced is kept in the ledger's meta ``ha_topics``."""
        wanted: dict[str, dict] = {}
        if self.mqtt_config.homeassistant:
            products = [(p.id, p.name) for p in self.config.products]
            wanted = dict(home_assistant_configs(self.config.machine_id, self.root, products,
                                                 controller.__version__))
        before = self.ledger.meta("ha_topics", [])
        for topic in before:
            if topic not in wanted:
                self.client.publish(topic, b"", qos=1, retain=True)
        for topic, payload in wanted.items():
            self.client.publish(topic, compact(payload), qos=1, retain=True)
        if sorted(before) != sorted(wanted):
            announced = sorted(wanted)
            self.writes.write(lambda now: self.ledger.set_meta("ha_topics", announced))

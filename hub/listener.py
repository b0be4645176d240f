"""The hub's ear: every machine under the prefix, over MQTT, into the store.

A persistent session (fixed client id, clean start off, QoS 1), so what machines say while
the hub is down waits at the broker. Messages are acknowledged by hand, only once they are
committed to the store: a hub killed between the two hears them again, and the store's
keys (a bucket's id, an event's id) make a second hearing count once. A message that does
not keep the contract is logged and skipped; it never stops the hub or enters the store.

Several hub processes (``mqtt.share_group``, each with its own ``client_id``) share the
counted messages, ``usage`` and ``event``, through an MQTT 5 shared subscription: each is
delivered to one of them. What is a machine's latest word (``availability``, ``state``,
``stock``, retained at the broker) and the answers to commands go to every process: a
shared subscription gets no retained messages and no order between its members, and a
process waiting for an answer must hear it. Storing those twice is harmless (the latest
wins in the order the machine sent them; an answer is kept once).
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.clock import Clock, SystemClock, iso
from controller.config import MACHINE_ID
from controller.messages import (
    BadMessage,
    CommandResult,
    EventMessage,
    StateMessage,
    StockMessage,
    UsageMessage,
    compact,
    read_availability,
    read_key,
    sign_command,
    split_topic,
)
from hub.config import HubConfig
from hub.store import HubStore

log = logging.getLogger(__name__)

BATCH = 500  # messages stored in one transaction at most
SESSION_EXPIRY_S = 7 * 24 * 3600
QUIET_LOG_S = 60.0  # one line per machine and topic a minute about bad messages, at most


@dataclass(frozen=True)
class Heard:
    """What one stored message changed, for the alerts and for whoever waits on a command."""

    machine: str
    leaf: str
    message: Any  # the read payload: StateMessage, UsageMessage, ... or the availability text
    new: bool = True  # False for a usage or event heard before


class Listener:
    """Subscribes to ``{prefix}/+/#``, stores what it hears, sends commands.

    ``on_heard`` is called (from the writer thread) with each committed batch.
    """

    def __init__(self, config: HubConfig, store: HubStore, clock: Clock | None = None,
                 on_heard: Callable[[list[Heard]], None] = lambda heard: None,
                 client_id: str | None = None) -> None:
        self.config, self.store, self.clock, self.on_heard = config, store, clock or SystemClock(), on_heard
        self.prefix = config.mqtt.prefix
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker has our subscription (and session)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.stored = 0
        self.skipped = 0
        self._quiet: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="hub-store", daemon=True)
        self.client = self._client(client_id or config.client_id)

    # -- the MQTT client --------------------------------------------------------------------
    def _client(self, client_id: str) -> mqtt.Client:
        cfg = self.config.mqtt
        v5 = cfg.protocol == "5"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else False, manual_ack=True)
        if cfg.username:
            password = None
            if cfg.password_file:
                with open(cfg.password_file) as f:
                    password = f.read().strip()
            client.username_pw_set(cfg.username, password)
        if cfg.ca_file:
            client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = lambda c, u, mid, reasons, props: self.subscribed.set()
        return client

    def start(self) -> None:
        cfg = self.config.mqtt
        kwargs: dict[str, Any] = {}
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        self._writer.start()
        self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, **kwargs)
        self.client.loop_start()
        log.info("listening to %s/+ at %s:%d", self.prefix, cfg.host, cfg.port)

    def stop(self) -> None:
        self._stop.set()
        self._writer.join(10)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("the broker refused the hub: %s", reason)
            return
        client.subscribe([(topic, 1) for topic in self.topics()])
        self.connected.set()
        log.info("connected to the broker (%s)", reason)

    def topics(self) -> list[str]:
        """What this process subscribes to (see the module's comment)."""
        root = f"{self.prefix}/+"
        group = self.config.share_group
        if not group:
            return [f"{root}/#"]
        return [f"$share/{group}/{root}/usage", f"$share/{group}/{root}/event",
                f"{root}/availability", f"{root}/state", f"{root}/stock", f"{root}/cmd/result"]

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected.is_set():
            log.warning("lost the broker (%s); reconnecting", reason)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.put((message.topic, message.payload, message.mid, message.qos))

    # -- the writer ---------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            heard = self._store_until_stored(batch)
            if heard is None:
                return  # stopping: not acknowledged, so the broker sends them again
            for _, _, mid, qos in batch:
                if qos:
                    self.client.ack(mid, qos)
            if heard:
                try:
                    self.on_heard(heard)
                except Exception:
                    log.exception("handling what was heard failed; carrying on")

    def _store_until_stored(self, batch: list[tuple[str, bytes, int, int]]) -> list[Heard] | None:
        """Store ``batch``, trying again while the database is away (the batch is not
        acknowledged until then, so nothing is lost); None if the hub stops first."""
        wait = 1.0
        while True:
            try:
                return self.store_batch(batch)
            except Exception as e:
                log.warning("could not store %d messages (%s); trying again in %.0f s",
                            len(batch), str(e).strip().splitlines()[0][:200] if str(e) else
                            type(e).__name__, wait)
            if self._stop.wait(wait):
                return None
            wait = min(wait * 2, 30.0)

    def store_batch(self, batch: list[tuple[str, bytes, int, int]]) -> list[Heard]:
        """Store a batch of ``(topic, payload, mid, qos)`` in one transaction."""
        now = self.clock.now()
        read = [r for r in (self._read(topic, payload) for topic, payload, _, _ in batch) if r]
        heard: list[Heard] = []
        with self.store.transaction():
            # each machine's row first, in one order for every process: two hub processes'
            # batches then never wait for each other in a circle
            for machine in sorted({machine for machine, _, _ in read}):
                self.store.heard(machine, now)
            for machine, leaf, message in read:
                heard.append(self._record(machine, leaf, message, now))
        self.stored += len(heard)
        return heard

    def _read(self, topic: str, payload: bytes) -> tuple[str, str, Any] | None:
        where = split_topic(self.prefix, topic)
        if where is None or where[1] == "cmd":
            return None  # not a machine's, or the hub's own command coming back
        machine, leaf = where
        if not MACHINE_ID.fullmatch(machine):
            self._bad(machine, leaf, "the machine id is not like hackney-01")
            return None
        try:
            if leaf == "availability":
                return machine, leaf, read_availability(payload)
            return machine, leaf, READERS[leaf].read(payload)
        except BadMessage as e:
            self._bad(machine, leaf, str(e))
            return None

    def _record(self, machine: str, leaf: str, message: Any, now: datetime) -> Heard:
        new = True
        if leaf == "availability":
            self.store.record_availability(machine, message, now)
        elif leaf == "state":
            self.store.record_state(machine, message, now)
        elif leaf == "stock":
            self.store.record_stock(machine, message, now)
        elif leaf == "usage":
            new = self.store.record_usage(machine, message, now)
        elif leaf == "event":
            new = self.store.record_event(machine, message, now)
        elif leaf == "cmd/result":
            self.store.record_result(machine, message, now)
        return Heard(machine, leaf, message, new)

    def _bad(self, machine: str, leaf: str, problem: str) -> None:
        self.skipped += 1
        now = time.monotonic()
        if now - self._quiet.get((machine, leaf), -QUIET_LOG_S) >= QUIET_LOG_S:
            self._quiet[(machine, leaf)] = now
            log.warning("skipped a %s message from %s that does not keep the contract: %s",
                        leaf, machine[:64], problem[:200])

    # -- commands ---------------------------------------------------------------------------
    def send_command(self, machine: str, command: dict, user: str) -> dict:
        """Send ``command`` (the contract's, without ``id``) to ``machine`` with an id and an
        ``expires``, signed with the machine's key if it has one; record who sent it. Returns
        the command as sent."""
        now = self.clock.now()
        sent = {**command, "id": f"hub-{uuid.uuid4().hex[:16]}",
                "expires": iso(now + timedelta(seconds=self.config.command_expires_s))}
        info = self.config.machines.get(machine)
        if info is not None and info.command_key_file:
            sent = sign_command(sent, read_key(info.command_key_file))
        with self.store.transaction():
            self.store.record_command(sent["id"], machine, user,
                                      {k: v for k, v in sent.items() if k != "sig"}, now)
        info_ = self.client.publish(f"{self.prefix}/{machine}/cmd", compact(sent), qos=1)
        if info_.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("command %s to %s not handed to the broker (%s); it is recorded",
                        sent["id"], machine, info_.rc)
        log.info("command %s (%s) to %s by %s", sent["cmd"], sent["id"], machine, user)
        return sent


READERS: dict[str, Any] = {"state": StateMessage, "stock": StockMessage, "usage": UsageMessage,
                           "event": EventMessage, "cmd/result": CommandResult}

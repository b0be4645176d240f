"""A fleet of light machines: paho publishers that speak the MQTT contract (docs/hub.md), not full
daemons, for testing and measuring the hub with hundreds or thousands of machines.

Each machine says ``online`` (retained), its state and stock (retained), and whatever usage
buckets and events it is given, at QoS 1; it answers the commands it is sent. Machines share
a few MQTT connections (``connections``), each machine always on the same one so its
messages keep their order; a connection's last will says nothing (availability is the
machine's, retained, and set by hand here).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from controller.clock import iso
from controller.messages import (
    CommandResult,
    EventMessage,
    ProductStock,
    SlotStock,
    StateMessage,
    StockMessage,
    UsageMessage,
    compact,
)

PRODUCTS = ("syringe-1ml", "foil", "citric", "naloxone")


def state(ts: datetime, faults: Iterable[str] = (), **changes: Any) -> StateMessage:
    return StateMessage(**{"mode": "in_service", "door": "closed", "sharps_bin": "ok",
                           "temperature_c": None, "faults": tuple(faults), "version": "fleet",
                           "uptime_s": 1, "clock_synced": True, "ts": iso(ts), **changes})


def stock(ts: datetime, count: int = 10) -> StockMessage:
    slots = tuple(SlotStock(i + 1, p, count, 20, 3, "ok" if count > 3 else "low")
                  for i, p in enumerate(PRODUCTS))
    return StockMessage(ts=iso(ts), slots=slots,
                        products={s.product: ProductStock(s.count, s.status) for s in slots})


def bucket(start: datetime, counts: dict[str, int], minutes: int = 60,
           unconfirmed: dict[str, int] | None = None) -> UsageMessage:
    return UsageMessage(id=uuid.uuid4().hex, start=iso(start),
                        end=iso(start + timedelta(minutes=minutes)),
                        counts={p: counts.get(p, 0) for p in PRODUCTS},
                        unconfirmed={p: (unconfirmed or {}).get(p, 0) for p in PRODUCTS},
                        clock_synced=True)


def event(ts: datetime, kind: str, slot: int | None = None, product: str | None = None,
          detail: str | None = None) -> EventMessage:
    return EventMessage(id=uuid.uuid4().hex, ts=iso(ts), type=kind, slot=slot, product=product,
                        detail=detail)


class Fleet:
    """``machine_ids`` on ``connections`` MQTT connections to ``host:port``."""

    def __init__(self, host: str, port: int, machine_ids: list[str], prefix: str = "nspvend",
                 connections: int = 8, name: str = "fleet") -> None:
        self.prefix, self.ids = prefix, list(machine_ids)
        self.commands: list[tuple[str, dict]] = []  # (machine, command) as received
        self.ledgers: dict[str, list[UsageMessage]] = {m: [] for m in self.ids}  # every bucket
        self._lock = threading.Lock()
        self._sent: list[mqtt.MQTTMessageInfo] = []
        self.clients: list[mqtt.Client] = []
        for n in range(max(1, min(connections, len(self.ids)))):
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{n}",
                                 protocol=mqtt.MQTTv311)
            client.max_inflight_messages_set(200)
            client.max_queued_messages_set(0)
            client.on_message = self._on_command
            client.user_data_set(n)
            client.connect(host, port, keepalive=60)
            client.loop_start()
            self.clients.append(client)
        for n, client in enumerate(self.clients):
            mine = [m for i, m in enumerate(self.ids) if i % len(self.clients) == n]
            if mine:
                client.subscribe([(f"{prefix}/{m}/cmd", 1) for m in mine])

    def client_of(self, machine: str) -> mqtt.Client:
        return self.clients[self.ids.index(machine) % len(self.clients)]

    def publish(self, machine: str, leaf: str, payload: str, retain: bool = False) -> None:
        info = self.client_of(machine).publish(f"{self.prefix}/{machine}/{leaf}", payload, qos=1,
                                               retain=retain)
        with self._lock:
            self._sent.append(info)

    def say(self, machine: str, message: Any) -> None:
        """Publish one of the contract's messages as the machine would."""
        if isinstance(message, UsageMessage):
            self.keep(machine, message)
        self.publish(machine, message.LEAF, message.encode(), retain=getattr(message, "RETAIN", False))

    def keep(self, machine: str, usage: UsageMessage) -> None:
        """A bucket in the machine's ledger (``say`` also sends it; alone: one the broker
        lost), which it lists when asked (the ``usage`` command)."""
        with self._lock:
            self.ledgers[machine].append(usage)

    def hello(self, at: datetime) -> None:
        """Every machine: online, its state and its stock."""
        for m in self.ids:
            self.publish(m, "availability", "online", retain=True)
            self.say(m, state(at))
            self.say(m, stock(at))

    def wait_acked(self, timeout: float = 60) -> bool:
        """Wait until the broker has every message published so far (PUBACK)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            sent, self._sent = self._sent, []
        for info in sent:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        return True

    def _on_command(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        machine = message.topic.split("/")[-2]
        try:
            command = json.loads(message.payload)
        except ValueError:
            return
        with self._lock:
            self.commands.append((machine, command))
            result: dict = {"machine": machine}
            if command.get("cmd") == "usage":
                since = command.get("since") or ""
                result = {"buckets": [{k: v for k, v in u.payload().items() if k != "schema"}
                                      for u in self.ledgers.get(machine, []) if u.start >= since],
                          "totals": {}}
        answer = CommandResult(command.get("id"), True, result=result)
        client.publish(f"{self.prefix}/{machine}/cmd/result", compact(answer.payload()), qos=1)

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()

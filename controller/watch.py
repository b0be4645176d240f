"""``nspvend watch``: a small hub-side subscriber for staff and developers.

Prints, one line each, the availability, state, stock, usage, events and command
results of every machine under a prefix, as they arrive (retained ``state`` and
``stock`` first, so the screen starts with what every machine holds now).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from controller.config import log_in
from controller.messages import (
    BadMessage,
    CommandResult,
    EventMessage,
    StateMessage,
    StockMessage,
    UsageMessage,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubAccount:
    """Where the hub is and how to log in to it."""

    host: str
    port: int
    prefix: str = "nspvend"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def describe(machine: str, leaf: str, payload: Any) -> str:
    """One human line for one message (``payload`` already decoded from JSON if it was);
    read with the same code that wrote it, or shown raw if it does not keep the contract."""
    try:
        return _describe(machine, leaf, payload)
    except BadMessage as e:
        return f"{machine} {leaf} (not as the contract says: {e}) {json.dumps(payload)[:200]}"


def _describe(machine: str, leaf: str, payload: Any) -> str:
    if leaf == "availability":
        return f"{machine} {payload}"
    if leaf == "state":
        state = StateMessage.read(payload)
        return (f"{machine} state {state.mode}  door {state.door}  sharps bin "
                f"{state.sharps_bin}  faults: {', '.join(state.faults) or 'none'}")
    if leaf == "stock":
        stock = StockMessage.read(payload)
        return f"{machine} stock " + ", ".join(f"{p} {v.count} {v.status}"
                                               for p, v in stock.products.items())
    if leaf == "usage":
        usage = UsageMessage.read(payload)

        def counts(c: dict[str, int]) -> str:
            return ", ".join(f"{p} {n}" for p, n in c.items() if n) or "nothing"
        line = f"{machine} usage {usage.start} to {usage.end}: {counts(usage.counts)}"
        if any(usage.unconfirmed.values()):
            line += f" (unconfirmed: {counts(usage.unconfirmed)})"
        return line
    if leaf == "event":
        event = EventMessage.read(payload)
        where = " ".join(str(v) for v in (event.slot, event.product) if v is not None)
        detail = f": {event.detail}" if event.detail else ""
        return f"{machine} event {event.type}{' ' + where if where else ''}{detail}"
    if leaf == "cmd/result":
        result = CommandResult.read(payload)
        outcome = "ok" if result.ok else f"refused: {result.error}"
        return f"{machine} command {result.id} {outcome}"
    return f"{machine} {leaf} {json.dumps(payload, separators=(',', ':'))}"


class Watcher:
    """Subscribes to ``{prefix}/+/#`` and writes a line per message to ``out``."""

    def __init__(self, account: HubAccount, out: TextIO = sys.stdout, as_json: bool = False
                 ) -> None:
        self.account, self.out, self.as_json = account, out, as_json
        self.connected = threading.Event()
        self._seen_usage: set[str] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        log_in(self.client, account, account.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("the hub refused the connection: %s", reason)
            return
        client.subscribe(f"{self.account.prefix}/+/#", qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/", 2)
        if len(parts) < 3 or parts[2] == "cmd":
            return  # requests are the hub's own words
        machine, leaf = parts[1], parts[2]
        try:
            payload: Any = json.loads(message.payload)
        except (ValueError, UnicodeDecodeError):
            payload = message.payload.decode("utf-8", "replace")
        if leaf == "usage" and isinstance(payload, dict):
            if payload.get("id") in self._seen_usage:
                return  # a re-sent bucket: the hub counts it once, and so do we
            self._seen_usage.add(payload.get("id"))
        if self.as_json:
            line = json.dumps({"machine": machine, "kind": leaf, "payload": payload},
                              separators=(",", ":"))
        else:
            line = time.strftime("%H:%M:%S ") + describe(machine, leaf, payload)
        self.out.write(line + "\n")
        self.out.flush()

    def run(self, stop: threading.Event | None = None) -> None:
        """Connect (raises ``OSError`` if the hub cannot be reached) and print until ``stop``."""
        self.client.connect(self.account.host, self.account.port)
        self.client.loop_start()
        try:
            (stop or threading.Event()).wait()
        finally:
            self.client.disconnect()
            self.client.loop_stop()

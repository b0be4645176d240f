"""The hub's ear: every machine under the prefix, over MQTT, into the store.

A persistent session (fixed client id, clean start off, QoS 1), so what machines say while
the hub is down waits at the broker. Messages are acknowledged by hand, only once they are
committed to the store: a hub killed between the two hears them again, and the store's
keys (a bucket's id, an event's id) make a second hearing count once. A message that does
not keep the contract is logged and skipped; it never stops the hub or enters the store.

Several hub processes (``mqtt.share_group``, each with its own ``client_id``) share the
machines' messages, ``usage``, ``event``, ``state`` and ``stock``, through an MQTT 5 shared
subscription: each is delivered to one of them, so two processes do half the work each. A
shared subscription keeps no order between its members: a state or stock told before the
one kept is not kept (:meth:`hub.store.fleet.Fleet.record_heard`), whichever process
stores it, whenever. By MQTT 5 it gets no retained messages either (mosquitto 2.0 gives
them): on connecting, a process also subscribes to ``state`` and ``stock`` alone for the
machines' retained words (those of a machine gone quiet included), and unsubscribes once
the broker has them on their way.
``availability`` (retained, a change seldom, its order the only one there is) and the
answers to commands (a process waiting for an answer must hear it) go to every process;
storing those twice is harmless.
"""

from __future__ import annotations

import logging
import queue
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

from controller.clock import Clock, SystemClock, iso, parse_iso
from controller.config import MACHINE_ID, log_in
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
from hub.enrol import Directory
from hub.store import HubStore, first_line

log = logging.getLogger(__name__)

# messages stored in one transaction at most: what waits is taken together, so a busy hub
# pays a transaction's fixed costs (its commit reaching the disk, the statements' round
# trips to a database server) once for up to this many (a backlog drains 20-35% faster
# than with 500), and a quiet one stores each message as it comes
BATCH = 2000
SHARED = ("usage", "event", "state", "stock")  # with a share group, each to one process
RETAINED = ("state", "stock")  # of those, retained at the broker
SESSION_EXPIRY_S = 7 * 24 * 3600
RETIRE_QUIET_S = 5.0  # longer than a running process's first reconnect (1 s)
STALLED_S = 120.0
RECOVER_AT_MOST = 2000  # buckets taken from one answer to usage
QUIET_LOG_S = 60.0  # one line per machine and topic a minute about bad messages, at most
MAX_PAYLOAD = 64 * 1024  # a machine's message is a few KiB: larger is skipped unread
MAX_ANSWER = 1024 * 1024  # but an answer to ``usage`` lists a day of buckets
AHEAD_S = 300  # a bucket ending further ahead of the hub's clock than this is refused
ASKING_REMEMBERED = 1000  # ids nobody enrolled, remembered (the store keeps 100)


@dataclass(frozen=True)
class Heard:
    """What one stored message changed, for the alerts and for whoever waits on a command."""

    machine: str
    leaf: str
    message: Any  # the read payload: StateMessage, UsageMessage, ... or the availability text
    new: bool = True  # False for a usage or event heard before


class Retiring(Exception):
    """Why a hub process's session could not be retired (one line for a person)."""


class Listener:
    """Subscribes to ``{prefix}/+/#``, stores what it hears, sends commands.

    ``on_heard`` is called (from the writer thread) with each committed batch.
    """

    def __init__(self, config: HubConfig, store: HubStore, clock: Clock | None = None,
                 on_heard: Callable[[list[Heard]], None] = lambda heard: None,
                 client_id: str | None = None, retiring: bool = False) -> None:
        self.config, self.store, self.clock, self.on_heard = config, store, clock or SystemClock(), on_heard
        self.prefix = config.mqtt.prefix
        self.retiring = retiring  # see retire()
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker has our subscription (and session)
        self.unsubscribed = threading.Event()  # retiring: the broker sends us nothing new
        # with a share group: the subscription for the retained words, then its ending
        self._catching_up: int | None = None
        self.caught_up = threading.Event()  # its ending answered: the words all queued for us
        self.taken_over = threading.Event()  # another connection took this session
        self.received = 0
        self.acked = 0
        self.session_present = False
        self.last_heard = time.monotonic()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.stored = 0
        self.skipped = 0
        self.strangers = 0  # messages from ids nobody enrolled
        self.stored_by: dict[str, int] = {}  # per topic leaf, for /metrics
        self.skipped_by: dict[str, int] = {}
        self._quiet: dict[tuple[str, str], float] = {}
        self._asking: dict[str, float] = {}  # id nobody enrolled -> when last written down
        self._said_strangers = -QUIET_LOG_S
        self.directory = Directory(config, store)
        self.directory.refresh(force=True)
        self._stop = threading.Event()
        # the messages read ahead while the writer stores the batch before them (see _read_ahead)
        self._ahead: list[tuple[str, bytes, int, int, Any]] = []
        self._ahead_changed = threading.Condition()
        self._writer = threading.Thread(target=self._write_loop, name="hub-store", daemon=True)
        self.client_id = client_id or config.client_id
        self.client = self._client(self.client_id)

    # -- the MQTT client --------------------------------------------------------------------
    def _client(self, client_id: str) -> mqtt.Client:
        cfg = self.config.mqtt
        v5 = cfg.protocol == "5"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else False, manual_ack=True)
        log_in(client, cfg, cfg.password())
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        return client

    def start(self) -> None:
        cfg = self.config.mqtt
        kwargs: dict[str, Any] = {}
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            # the broker keeps anything larger from the hub: it never takes up its memory
            props.MaximumPacketSize = MAX_ANSWER + 4096
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
        self.session_present = bool(getattr(flags, "session_present", False))
        if self.retiring:  # whichever way it was subscribed, alone or sharing
            client.unsubscribe([f"{self.prefix}/+/#", *self.topics(), *self._retained()])
        else:
            if self.config.share_group:  # a session that once had everything, alone
                client.unsubscribe(f"{self.prefix}/+/#")
            client.subscribe([(topic, 1) for topic in self.topics()])
            if self._retained():
                self.caught_up.clear()
                # the broker queues every retained match for us as it takes the subscription,
                # as it answers: ending it once answered loses none (_on_subscribe)
                self._catching_up = client.subscribe([(t, 1) for t in self._retained()])[1]
        self.connected.set()
        log.info("connected to the broker (%s)", reason)

    def topics(self) -> list[str]:
        """What this process subscribes to (see the module's comment)."""
        root = f"{self.prefix}/+"
        group = self.config.share_group
        if not group:
            return [f"{root}/#"]
        return [*(f"$share/{group}/{root}/{leaf}" for leaf in SHARED),
                f"{root}/availability", f"{root}/cmd/result"]

    def _retained(self) -> list[str]:
        """With a share group, what is subscribed to alone for a moment on connecting: the
        shared words that are retained, which MQTT 5 gives a shared subscription none of
        (mosquitto 2.0 gives them all the same: then they come twice, the second not kept)."""
        return [f"{self.prefix}/+/{leaf}" for leaf in RETAINED] if self.config.share_group else []

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        if mid == self._catching_up:  # the retained words are on their way: shared from now
            self._catching_up = client.unsubscribe(self._retained())[1]
        else:
            self.subscribed.set()

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                        properties: Any) -> None:
        if mid == self._catching_up:
            self.caught_up.set()
        else:
            self.unsubscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.retiring:
            # another connection with this client id took the session back (mosquitto says
            # so only as an error), or the broker went away: either way, not retired
            self.taken_over.set()
        elif self.connected.is_set():
            log.warning("lost the broker (%s); reconnecting", reason)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.received += 1
        self.last_heard = time.monotonic()
        self.inbox.put((message.topic, message.payload, message.mid, message.qos))

    def retire(self, quiet_s: float = RETIRE_QUIET_S, wait_s: float = 30.0) -> int:
        """End this hub process's share of the machines' messages for good (a listener made
        with ``retiring=True``, the process itself stopped): take its session back at the
        broker, unsubscribe, store whatever was waiting in it (its share since it stopped),
        and end the session, so the broker stops keeping a share for it. Returns how many
        messages were waiting. Raises :class:`Retiring` if the process is still running (it
        takes its session back) or the broker does not answer."""
        cfg = self.config.mqtt
        if cfg.protocol != "5":
            raise Retiring("a hub process's session is retired over MQTT 5 (mqtt.protocol)")
        self.start()
        ended = False
        try:
            if not self.unsubscribed.wait(wait_s):
                raise Retiring(f"no answer from the broker at {cfg.host}:{cfg.port}")
            since = time.monotonic()
            progress = (self.acked, since)
            while True:
                if self.taken_over.wait(0.1):
                    raise Retiring("it is still running (it took its session back), or the "
                                   "broker went away: stop it first, or try again")
                now = time.monotonic()
                if self.acked != progress[0]:
                    progress = (self.acked, now)
                elif self.acked < self.received and now - progress[1] > STALLED_S:
                    raise Retiring(f"could not store what waited for it ({self.received - self.acked} "
                                   "messages; is the database there?); they wait still")
                if self.acked == self.received and now - max(since, self.last_heard) >= quiet_s:
                    break
            ending = Properties(PacketTypes.DISCONNECT)
            ending.SessionExpiryInterval = 0
            self.client.disconnect(properties=ending)
            ended = True
            return self.received
        finally:
            if not ended:
                self.client.disconnect()
            self._stop.set()
            self._writer.join(10)
            self.client.loop_stop()

    # -- the writer ---------------------------------------------------------------------------
    def _write_loop(self) -> None:
        reader = threading.Thread(target=self._read_ahead, name="hub-read", daemon=True)
        reader.start()
        try:
            while not self._stop.is_set():
                with self._ahead_changed:
                    if not self._ahead:
                        self._ahead_changed.wait(0.2)
                    taken, self._ahead = self._ahead, []
                    self._ahead_changed.notify_all()
                if taken:
                    self._write(taken)
        finally:
            self._stop.set()
            reader.join(10)

    def _write(self, taken: list[tuple[str, bytes, int, int, Any]]) -> None:
        batch = [item[:4] for item in taken]
        heard = self._store_until_stored(batch, [item[4] for item in taken])
        if heard is None:
            return  # stopping: not acknowledged, so the broker sends them again
        for _, _, mid, qos in batch:
            if qos:
                self.client.ack(mid, qos)
        self.acked += len(batch)
        if heard:
            try:
                self.on_heard(heard)
            except Exception:
                log.exception("handling what was heard failed; carrying on")

    def _read_ahead(self) -> None:
        """Take the messages heard into batches of up to :data:`BATCH`, each read
        (:meth:`_parse`) while the writer stores the batch before it: reading is most of a
        batch's work in Python, and storing mostly waits on the database (a server's
        round trips and commit; SQLite's own code), so the two go on at once."""
        while not self._stop.is_set():
            with self._ahead_changed:
                if len(self._ahead) >= BATCH:
                    self._ahead_changed.wait(0.2)
                    continue
                room = BATCH - len(self._ahead)
            chunk = []
            try:
                chunk.append(self.inbox.get(timeout=0.2))
                while len(chunk) < min(room, 100):
                    chunk.append(self.inbox.get_nowait())
            except queue.Empty:
                if not chunk:
                    continue
            read = [(*item, self._parse(item[0], item[1])) for item in chunk]
            with self._ahead_changed:
                self._ahead += read
                self._ahead_changed.notify_all()

    def _parse(self, topic: str, payload: bytes) -> Any:
        """A known machine's message read as :meth:`_read` would read it (the message, or
        the :class:`BadMessage` it raised); None where it is left to :meth:`_read` (not a
        known machine's, too long, or not a kind read here)."""
        where = split_topic(self.prefix, topic)
        if where is None or where[0] not in self.config.machines or where[1] not in READERS:
            return None
        if len(payload) > _limit(where[1]):
            return None
        try:
            return READERS[where[1]].read(payload)
        except BadMessage as e:
            return e
        except Exception:  # read again by _read, which says what it is
            return None

    def waiting(self) -> int:
        """Messages heard and not yet stored (acknowledged)."""
        return self.received - self.acked

    def _store_until_stored(self, batch: list[tuple[str, bytes, int, int]],
                            parsed: list[Any] | None = None) -> list[Heard] | None:
        """Read and store ``batch``, trying again while the database is away (the batch is
        not acknowledged until then, so nothing is lost; reading asks the database too, for
        the machines enrolled); None if the hub stops first.

        A message the store refuses for itself (one the contract's checks let through but
        the database will not keep) must not hold up every message after it: the batch is
        then stored a message at a time, and the one refused is logged and left out.
        ``parsed``: each message as :meth:`_parse` read it ahead, where it did."""
        parsed = parsed or [None] * len(batch)
        done = self._while_away(batch, parsed)
        if not isinstance(done, Exception):
            return done
        heard: list[Heard] = []
        for item, ahead in zip(batch, parsed, strict=True):
            one = self._while_away([item], [ahead])
            if one is None:
                return None
            if isinstance(one, Exception):
                where = split_topic(self.prefix, item[0]) or ("?", item[0][-40:])
                self._bad(where[0], where[1], "the store refused it ("
                          + first_line(one) + "); left out")
            else:
                heard += one
        return heard

    def _while_away(self, batch: list[tuple[str, bytes, int, int]], parsed: list[Any]
                    ) -> list[Heard] | Exception | None:
        """``batch`` read and stored (what it changed), the store's refusal of it, or None if
        the hub stops while the database is away."""
        wait = 1.0
        while True:
            try:
                return self.store_batch(batch, parsed)
            except Exception as e:
                if not self.store.unavailable(e):
                    return e
                log.warning("could not store %d messages (%s); trying again in %.0f s",
                            len(batch), first_line(e), wait)
            if self._stop.wait(wait):
                return None
            wait = min(wait * 2, 30.0)

    def store_batch(self, batch: list[tuple[str, bytes, int, int]],
                    parsed: list[Any] | None = None) -> list[Heard]:
        """Read and store a batch of ``(topic, payload, mid, qos)`` in one transaction (what
        does not keep the contract, or comes from a machine nobody enrolled, logged and
        skipped). ``parsed``: each payload as :meth:`_parse` read it, or None to read it."""
        parsed = parsed or [None] * len(batch)
        read = [r for r in (self._read(topic, payload, ahead) for (topic, payload, _, _), ahead
                            in zip(batch, parsed, strict=True)) if r]
        if not read:
            return []
        now = self.clock.now()
        heard: list[Heard] = []
        with self.store.transaction():
            # each machine's row first, once, with its latest state and stock (most of what
            # 10,000 machines say is a state every 5 minutes), every process in one order:
            # two hub processes' batches then wait for each other there, holding nothing
            # else, never in a circle. Then the buckets together, each kind in a few
            # statements however many, sent to a database server in a few round trips (a
            # backlog drains as fast into PostgreSQL as into a file); the rest message by
            # message (machines' rows this batch holds)
            usages = [(machine, message) for machine, leaf, message in read if leaf == "usage"]
            latest = {leaf: [(machine, message, told_at(message.ts, now))
                             for machine, kind, message in read if kind == leaf]
                      for leaf in ("state", "stock")}
            with self.store.pipeline():
                self.store.fleet.record_heard([machine for machine, _, _ in read], now,
                                              latest["state"], latest["stock"])
                new = iter(self.store.usage.record_usages(usages, now))
            for machine, leaf, message in read:
                if leaf == "usage":
                    heard.append(Heard(machine, leaf, message, next(new)))
                elif leaf in latest:
                    heard.append(Heard(machine, leaf, message, True))
                else:
                    heard.append(self._record(machine, leaf, message, now))
        self.stored += len(heard)
        for h in heard:
            self.stored_by[h.leaf] = self.stored_by.get(h.leaf, 0) + 1
        return heard

    def _read(self, topic: str, payload: bytes, parsed: Any = None
              ) -> tuple[str, str, Any] | None:
        where = split_topic(self.prefix, topic)
        if where is None or where[1] == "cmd":
            return None  # not a machine's, or the hub's own command coming back
        machine, leaf = where
        if self.retiring and leaf not in SHARED:
            return None  # a latest word from days ago: the running processes have newer
        if not MACHINE_ID.fullmatch(machine):
            self._bad(machine, leaf, "the machine id is not like hackney-01")
            return None
        self.directory.refresh()
        if machine not in self.config.machines:
            self._stranger(machine)
            return None
        limit = _limit(leaf)
        if len(payload) > limit:
            self._bad(machine, leaf, f"{len(payload)} bytes, more than {limit // 1024} KiB "
                                     "(not read)")
            return None
        try:
            if leaf == "availability":
                return machine, leaf, read_availability(payload)
            if isinstance(parsed, BadMessage):
                raise parsed
            message = READERS[leaf].read(payload) if parsed is None else parsed
        except BadMessage as e:
            self._bad(machine, leaf, str(e))
            return None
        if leaf == "usage" and parse_iso(message.end) > self.clock.now() + timedelta(
                seconds=AHEAD_S):
            self._bad(machine, leaf, f"a bucket ending {message.end}, ahead of the hub's clock")
            return None
        return machine, leaf, message

    def _record(self, machine: str, leaf: str, message: Any, now: datetime) -> Heard:
        new = True
        if leaf == "availability":
            self.store.fleet.record_availability(machine, message, now)
        elif leaf == "usage":
            new = self.store.usage.record_usage(machine, message, now)
        elif leaf == "event":
            new = self.store.fleet.record_event(machine, message, told_at(message.ts, now))
        elif leaf == "cmd/result":
            self.store.commands.record_result(machine, message, now)
            self._recover(machine, message, now)
        return Heard(machine, leaf, message, new)

    def _recover(self, machine: str, answer: CommandResult, now: datetime) -> None:
        """The machine's answer to ``usage`` (the hub's catch-up, or staff's) lists its closed
        buckets: any the hub never heard (a broker that lost them) is stored now, once."""
        listed = answer.result.get("buckets") if answer.ok and isinstance(answer.result, dict) else None
        if not isinstance(listed, list):
            return
        found = 0
        for item in listed[:RECOVER_AT_MOST]:
            try:
                bucket = UsageMessage.read({"schema": 1, **item} if isinstance(item, dict) else item)
            except BadMessage:
                continue
            if parse_iso(bucket.end) > now + timedelta(seconds=AHEAD_S):
                continue  # dated ahead: it would silence the silence alert for ever
            found += self.store.usage.record_usage(machine, bucket, now)
        if found:
            log.warning("stored %d usage buckets from %s that had not reached the hub (asked "
                        "the machine for them)", found, machine)

    def _stranger(self, machine: str) -> None:
        """A message from an id nobody enrolled: not stored; the id is written down among
        those asking to join (at most once a minute each, and no more than the store keeps),
        and a line a minute at most says so."""
        self.strangers += 1
        now = time.monotonic()
        last = self._asking.get(machine)
        if last is None and len(self._asking) >= ASKING_REMEMBERED:
            return  # a flood of made-up ids: nothing more is done for them
        if last is None or now - last >= QUIET_LOG_S:
            self._asking[machine] = now
            try:
                self.store.fleet.ask_to_join(machine, self.clock.now())
            except Exception as e:  # the store away: the id is asked for again later
                if not self.store.unavailable(e):
                    raise
        if now - self._said_strangers >= QUIET_LOG_S:
            self._said_strangers = now
            log.warning("not stored: messages from %s, which nobody enrolled (nspvend hub "
                        "machine add); %d such messages so far", machine[:64], self.strangers)

    def _bad(self, machine: str, leaf: str, problem: str) -> None:
        self.skipped += 1
        self.skipped_by[leaf[:20]] = self.skipped_by.get(leaf[:20], 0) + 1
        now = time.monotonic()
        if len(self._quiet) > 10000:  # a flood of made-up ids not like machine ids
            self._quiet.clear()
        if now - self._quiet.get((machine, leaf), -QUIET_LOG_S) >= QUIET_LOG_S:
            self._quiet[(machine, leaf)] = now
            log.warning("skipped a %s message from %s that does not keep the contract: %s",
                        leaf, machine[:64], problem[:200])

    # -- commands ---------------------------------------------------------------------------
    def send_command(self, machine: str, command: dict, user: str, quiet: bool = False) -> dict:
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
            self.store.commands.record(sent["id"], machine, user,
                                      {k: v for k, v in sent.items() if k != "sig"}, now)
        info_ = self.client.publish(f"{self.prefix}/{machine}/cmd", compact(sent), qos=1)
        if info_.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("command %s to %s not handed to the broker (%s); it is recorded",
                        sent["id"], machine, info_.rc)
        log.log(logging.DEBUG if quiet else logging.INFO, "command %s (%s) to %s by %s",
                sent["cmd"], sent["id"], machine, user)
        return sent


def _limit(leaf: str) -> int:
    """The most bytes a message under ``leaf`` is read at."""
    return MAX_ANSWER if leaf == "cmd/result" else MAX_PAYLOAD


def told_at(ts: str, now: datetime) -> datetime:
    """When a message says it was told: its ``ts``, unless that is far from ``now``.

    Promise 2: what a vend causes is told when its bucket closes, stamped with the bucket's
    end. The hub keeps that stamp as the time of the event, state or stock (and of the alert
    it raises), not the moment it arrived, so nothing it keeps is finer than what the
    machine said. A stamp more than two days old (a backlog after an outage, a clock not yet
    set) or ahead of the hub's clock by more than a minute is not believed: then the
    arrival, which is then tied to the broker or the clock, not to a press.
    """
    try:
        said = parse_iso(ts)
    except (TypeError, ValueError):
        return now
    if now - timedelta(days=2) <= said <= now + timedelta(minutes=1):
        return said
    return now


READERS: dict[str, Any] = {"state": StateMessage, "stock": StockMessage, "usage": UsageMessage,
                           "event": EventMessage, "cmd/result": CommandResult}

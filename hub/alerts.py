"""Alerts: what staff should hear of, once when it starts and once when it ends.

A condition (a machine offline, a slot jammed, a product empty or low, the sharps bin
full, the door open, silence, a storage or board fault) is worked out from what the hub
last heard; when it appears it is *raised*, when it goes it is *cleared*, and nothing is
said in between. Each route (``[[alerts.routes]]``) hears the types it asks for, by email
and/or webhook, within its hours; a condition raised out of hours is told when the hours
begin if it is still there, and its clearing only to routes that heard it raised.
Deliveries are queued in the store and retried with a growing wait when they fail; a route
gets at most :data:`ROUTE_PER_MINUTE` messages a minute, the rest wait their turn.
"""

from __future__ import annotations

import json
import logging
import smtplib
import threading
import urllib.error
import urllib.request
from collections import deque
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from controller.clock import Clock, SystemClock, iso, parse_iso
from controller.messages import SlotStock
from controller.stock import use_until
from hub import humane, rank
from hub.config import HubConfig
from hub.listener import Heard
from hub.store import HubStore, Machine

log = logging.getLogger(__name__)

ROUTE_PER_MINUTE = 10  # messages a route is sent in any 60 s
CLEAR_AFTER_S = 5.0  # a condition is cleared once gone this long: one flapping is one alert
MACHINE_PER_HOUR = 30  # messages about one machine queued in any hour, at most
RETRIES = (30, 60, 120, 300, 600, 1800, 3600)  # seconds before each retry; then give up
Condition = tuple[str, str, str, str]  # machine, type, subject, detail


def sentence(text: str) -> str:
    """``foil: none left`` -> ``Foil: none left``."""
    return text[:1].upper() + text[1:]


def conditions_of(machine: Machine, now: datetime, offline_after_s: int,
                  tz: ZoneInfo | None = None, expiring_days: int = 30) -> list[Condition]:
    """What is wrong with ``machine`` as far as the hub can tell, each in words naming the
    product (times in ``tz``); a slot holding packs is ``expiring`` from ``expiring_days``
    before the end of the month they expire at, and ``expired`` (as well) from the day
    after it, both until a refill with a later date or none, or the slot runs out."""
    tz = tz or ZoneInfo("UTC")
    found: list[Condition] = []
    mid = machine.id
    heard = parse_iso(machine.last_heard) if machine.last_heard else None
    gone = machine.availability == "offline" and machine.availability_since and (
        now - parse_iso(machine.availability_since)).total_seconds() >= offline_after_s
    silent = heard is not None and (now - heard).total_seconds() >= offline_after_s
    if gone or silent:
        since = machine.availability_since if gone else machine.last_heard
        found.append((mid, "offline", "", f"Offline: nothing heard since "
                                          f"{humane.when(since, tz, now)}"))
    if machine.silence:  # a silence event, and no pack since
        found.append((mid, "silence", "", sentence(machine.silence)))
    state, stock = machine.state, machine.stock
    if state is not None:
        for fault in state.faults:
            if fault.startswith("slot ") and fault.endswith(": jam"):
                found.append((mid, "jam", fault.split(":")[0], humane.fault_words(fault, stock)))
        if "storage_fault" in state.faults:
            found.append((mid, "storage_fault", "", humane.FAULTS["storage_fault"]))
        if "board_fault" in state.faults:
            found.append((mid, "board_fault", "", humane.FAULTS["board_fault"]))
        if "board_outdated" in state.faults:
            found.append((mid, "board_outdated", "", humane.FAULTS["board_outdated"]))
        if state.sharps_bin == "full":
            found.append((mid, "sharps_bin_full", "", "Sharps bin full"))
        if state.door == "open":
            found.append((mid, "door_open", "", "Door open: not serving"))
    if stock is not None:
        for product, p in stock.products.items():
            name = sentence(humane.product_name(stock, product))
            if p.status == "empty":
                found.append((mid, "empty", product, f"{name}: none left"))
            elif p.status == "low":
                found.append((mid, "low_stock", product, f"{name}: {humane.number(p.count)} left"))
        today = now.astimezone(tz).date()
        for s in stock.slots:
            dated = date_state(s, today, expiring_days)
            if not dated:
                continue
            words, month = humane.slot_words(stock, s.slot), humane.month_of(s.expires)
            found.append((mid, "expiring", f"slot {s.slot}", f"{words}: use by end of {month}"))
            if dated == "expired":
                found.append((mid, "expired", f"slot {s.slot}",
                              f"{words}: past its date (end of {month})"))
    return found


def date_state(s: SlotStock, today: date, expiring_days: int) -> str:
    """``expired`` for a slot holding packs past their date on ``today``, ``expiring`` for
    one within ``expiring_days`` of it, else "" (no date, no packs, or in date): the one
    place the board, the pick list and the alerts ask."""
    if not s.expires or s.count <= 0:
        return ""
    until = use_until(s.expires)
    if today >= until:
        return "expired"
    return "expiring" if today >= until - timedelta(days=expiring_days) else ""


TYPE_WORDS = {"offline": "Offline", "silence": "No packs given out", "jam": "Slot jammed",
              "storage_fault": "Cannot save counts", "board_fault": "Dispenser board fault",
              "board_outdated": "Board firmware out of date",
              "sharps_bin_full": "Sharps bin full", "door_open": "Door open",
              "empty": "None left", "low_stock": "Running low",
              "expiring": "Near its date", "expired": "Past its date"}
ENDED = {"offline": "Back online", "silence": "Packs given out again",
         "jam": "{thing} working again", "storage_fault": "Writing its counts to disk again",
         "board_fault": "Dispenser board fault cleared",
         "board_outdated": "Dispenser board's firmware updated", "sharps_bin_full": "Sharps bin emptied",
         "door_open": "Door closed", "empty": "{thing} restocked",
         "low_stock": "{thing} no longer low",
         "expiring": "{thing}: no packs near their date now",
         "expired": "{thing}: no packs past their date now"}


SLOT_KINDS = ("jam", "expiring", "expired")  # alerts about one slot: subject "slot N"


def product_of(machine: Machine | None, kind: str, subject: str) -> str | None:
    """The product an alert is about, by name (a jammed slot's product), or None."""
    stock = machine.stock if machine else None
    if kind in ("empty", "low_stock") and subject:
        return humane.product_name(stock, subject)
    if kind in SLOT_KINDS and subject.startswith("slot ") and subject[5:].isdigit():
        product = humane.slot_product(stock, int(subject[5:]))
        return humane.product_name(stock, product) if product else None
    return None


def ended(machine: Machine | None, kind: str, subject: str, lasted_s: float) -> str:
    """What a cleared alert says: what ended, and after how long."""
    if kind in SLOT_KINDS and subject.startswith("slot ") and subject[5:].isdigit():
        thing = humane.slot_words(machine.stock if machine else None, int(subject[5:]))
    else:
        thing = sentence(product_of(machine, kind, subject) or subject or "it")
    text = ENDED.get(kind, kind.replace("_", " ").capitalize() + " cleared")
    return f"{text.format(thing=thing)} after {humane.duration(lasted_s)}"


STATE_KINDS = ("jam", "storage_fault", "board_fault", "board_outdated", "sharps_bin_full",
               "door_open")


def told(machine: Machine, kind: str, now: datetime) -> datetime:
    """When the message that raised or cleared a condition of ``kind`` was told: the ``ts``
    of the machine's latest state or stock (a vend's consequences: its bucket's end), the
    silence's or the last pack's bucket end; ``now`` for offline, which the hub decides
    (promise 2: an alert keeps no time finer than what the machine said)."""
    if kind in STATE_KINDS:
        said = machine.state_at
    elif kind in ("low_stock", "empty"):
        said = machine.stock_at
    elif kind == "silence":
        said = max(filter(None, (machine.silence_at, machine.last_pack)), default=None)
    else:
        said = None
    return min(parse_iso(said), now) if said else now


ENDED_BY_BUCKETS = ("offline", "silence")  # a bucket is a machine heard, and may hold a pack
SWEEP_AT_MOST = 500  # machines a sweep works out again, besides those with an alert raised
HEARD_MARGIN_S = 30.0  # a sweep looks again at raised machines heard since the last, less this


class Alerts:
    """Raises and clears conditions, and delivers them along the configured routes."""

    def __init__(self, config: HubConfig, store: HubStore, clock: Clock | None = None) -> None:
        self.config, self.store, self.clock = config, store, clock or SystemClock()
        # the listener's thread (after each batch) and the checks' thread take turns: two
        # checks at once would both find a condition gone and both tell of it
        self._turn = threading.RLock()
        # raised, not seen since: when it was first found gone, and when the message that
        # showed it gone was told (what the clearing is stamped with, whatever comes later)
        self._gone: dict[tuple[str, str, str], tuple[datetime, datetime]] = {}
        self._sent: dict[int, deque[datetime]] = {}  # per route: when it was last sent to
        self._queued: dict[str, deque[datetime]] = {}  # per machine: messages queued
        self._held_back: set[str] = set()  # machines over MACHINE_PER_HOUR (said once)
        self._cursor = 0  # where the next sweep starts, among the machines by id
        self._swept: datetime | None = None  # when the last sweep began

    def heard(self, batch: list[Heard]) -> None:
        """After a batch is stored: the machines it came from, at once. A usage bucket
        raises nothing (what is wrong comes in states, stocks, events and availability);
        it can only end what is raised (a silence, by a pack; offline, by being heard): so
        of the machines that sent only buckets, those with such an alert raised. A backlog of
        buckets from a thousand machines then does not read and work out a thousand
        machines' words after every batch."""
        told = {h.machine for h in batch if h.leaf != "usage"}
        counted = {h.machine for h in batch if h.leaf == "usage" and h.new} - told
        if not counted:
            if told:
                self.check(told)
            return
        with self._turn:
            # read once: to choose, and to check
            raised = self.store.alerts.raised_alerts(told | counted)
            told |= counted & {m for m, kind, _ in raised if kind in ENDED_BY_BUCKETS}
            if told:
                self._check(told, raised)

    def sweep(self) -> None:
        """The checks' pass (every couple of seconds): the machines with an alert raised,
        and the next :data:`SWEEP_AT_MOST` of the others in turn. What a message changes is
        worked out as it is stored (:meth:`heard`); a sweep finds what time alone changes (a
        machine gone quiet, a date drawing near): a fleet of 10,000 is gone over every 40 s,
        not all of it, every machine's words read, every two seconds.

        Of the machines with an alert raised, those whose alert is waiting to be cleared;
        with several processes, those heard since the last sweep (whatever process stored
        it: a bucket stored by another can end a silence; a process alone worked out each
        as it stored it, :meth:`heard`); at a first sweep, all of them. The others have said
        nothing new, and what is raised does not end with time alone (an offline ends when
        the machine is heard, a date only with a refill): their turn comes round too. With
        several processes, also the machines heard since whose summary is less than "ok":
        what another process stored is raised within a sweep, not when its turn comes
        round."""
        known = sorted(self.config.machines)
        if len(known) <= SWEEP_AT_MOST:
            self.check()
            return
        now = self.clock.now()
        since, self._swept = self._swept, now
        start = self._cursor % len(known)
        chosen = set(known[start:start + SWEEP_AT_MOST])
        chosen |= set(known[:max(0, start + SWEEP_AT_MOST - len(known))])
        self._cursor = (start + SWEEP_AT_MOST) % len(known)
        # heard since the last sweep less a margin (another process's clock, a batch
        # committed while this one was reading)
        heard_since = None if since is None else iso(since - timedelta(seconds=HEARD_MARGIN_S))
        if since is None or self.config.share_group:
            # (a process alone heard them all, and worked each out as it stored it: heard)
            chosen |= self.store.alerts.raised_machines(heard_since)
        if self.config.share_group and heard_since is not None:
            # and those another process heard saying something wrong: it stores its share of
            # the machines' words (hub.listener), and only this one raises what they say.
            # Not at a first sweep: every machine not well is not read at once (at a start
            # after an outage, the whole fleet), but in turn
            chosen |= self.store.fleet.not_ok(None, *rank.bounds_of(self.config, now),
                                              heard_since=heard_since)
        with self._turn:
            chosen |= {key[0] for key in self._gone}
            self._check(chosen)

    def check(self, machines: set[str] | None = None) -> None:
        """Work out every machine's conditions again (all of them, or those named)."""
        with self._turn:
            self._check(machines)

    def _check(self, machines: set[str] | None, raised: dict | None = None) -> None:
        now = self.clock.now()
        if raised is None:
            raised = self.store.alerts.raised_alerts(machines)
        raised_of: dict[str, list[tuple[str, str, str]]] = {}  # by machine
        for key in raised:
            if machines is None or key[0] in machines:
                raised_of.setdefault(key[0], []).append(key)
        # only what may have something to say or to end: a machine whose summary is "ok"
        # has no condition (conditions_of finds one only where the summary does), so its
        # words are read and worked out only if it has an alert raised. Most of a healthy
        # fleet's messages then cost the alerts one short query a batch, not a reading of
        # every machine's state and stock
        wanted = self.store.fleet.not_ok(machines, *rank.bounds_of(self.config, now))
        wanted |= set(raised_of)
        raising: list[tuple[Condition, datetime]] = []
        clearing: list[tuple[tuple[str, str, str], datetime]] = []
        for machine in self.store.fleet.machines(wanted):
            if machine.id not in self.config.machines:
                continue  # removed (its history stays): nothing more is said of it
            current = {(m, t, s): d for m, t, s, d in
                       conditions_of(machine, now, self.config.offline_after_s, self.config.tz,
                                     self.config.expiring_days)}
            for key, detail in current.items():
                self._gone.pop(key, None)
                if key not in raised:
                    raising.append(((*key, detail), told(machine, key[1], now)))
            for key in raised_of.get(machine.id, ()):
                if key not in current:
                    # cleared only once gone for CLEAR_AFTER_S: a product flipping between
                    # low and ok is one alert, not one a flip
                    found, said = self._gone.setdefault(key, (now, told(machine, key[1], now)))
                    if (now - found).total_seconds() >= CLEAR_AFTER_S:
                        self._gone.pop(key, None)
                        clearing.append((key, said))
        if raising or clearing:
            # in one transaction, however many: the whole fleet found offline after an
            # outage, or a fifth of it low at a first start, is one commit, not 10,000 (each
            # waiting for the disk, the listener's thread meanwhile storing nothing)
            done: list[tuple[int, str]] = []  # logged once committed
            with self.store.transaction():
                done += [(logging.WARNING, line) for condition, at in raising
                         if (line := self._raise(condition, at))]
                done += [(logging.INFO, line) for key, at in clearing
                         if (line := self._clear(key, at))]
            for level, line in done:
                log.log(level, "%s", line)
        self._tell_raised(now, machines)

    def _raise(self, condition: Condition, at: datetime) -> str | None:
        """Raise ``condition`` (inside a transaction): what to log once committed, or None
        if it was raised already."""
        machine, kind, subject, detail = condition
        if not self.store.alerts.raise_alert(machine, kind, subject, detail, at):
            return None
        return f"alert raised: {machine} {kind} {subject}: {detail}"

    def _clear(self, key: tuple[str, str, str], at: datetime) -> str | None:
        """Clear the alert ``key`` and queue its routes' messages (inside a transaction):
        what to log once committed, or None if it was not raised."""
        row = self.store.alerts.raised_alerts({key[0]}).get(key)
        if row is None or not self.store.alerts.clear_alert(*key, max(at, parse_iso(row["raised"]))):
            return None
        lasted = (at - parse_iso(row["raised"])).total_seconds()
        text = ended(self.store.fleet.machine(key[0]), key[1], key[2], lasted)
        for route in json.loads(row["told"] or "[]"):
            self._queue(route, key[0], key[1], key[2], "cleared", at, text)
        return "alert cleared: {} {} {}".format(*key)

    def _tell_raised(self, now: datetime, machines: set[str] | None = None) -> None:
        """Tell each route of every raised alert (or those of ``machines``) it wants and has
        not heard, in its hours."""
        if not self.config.routes:
            return
        for (machine, kind, subject), row in self.store.alerts.raised_alerts(machines).items():
            was = row["told"]
            told = set(json.loads(was or "[]"))
            for i, route in enumerate(self.config.routes):
                if i in told or not route.wants(kind) or not self._in_hours(route, now):
                    continue
                told.add(i)
                with self.store.transaction():
                    if not self.store.alerts.set_told(machine, kind, subject, sorted(told), was):
                        break  # told already, by the process that ran the alerts before us
                    self._queue(i, machine, kind, subject, "raised", parse_iso(row["raised"]),
                                row["detail"])
                was = json.dumps(sorted(told))

    def _in_hours(self, route: object, now: datetime) -> bool:
        hours = getattr(route, "hours", ())
        if not hours:
            return True
        local = now.astimezone(self.config.tz)
        return any(window.contains(local) for window in hours)

    def _queue(self, route: int, machine: str, kind: str, subject: str, state: str,
               at: datetime, detail: str) -> None:
        body = {"schema": 1, "machine": machine, "name": self.config.name_of(machine),
                "type": kind, "state": state, "ts": iso(at), "detail": detail,
                "product": product_of(self.store.fleet.machine(machine), kind, subject),
                "url": f"{self.config.base_url}machines/{machine}"}
        r = self.config.routes[route]
        now = self.clock.now()
        recent = self._queued.setdefault(machine, deque())
        while recent and (now - recent[0]).total_seconds() >= 3600:
            recent.popleft()
        if len(recent) >= MACHINE_PER_HOUR:
            if machine not in self._held_back:
                self._held_back.add(machine)
                log.warning("%s: more than %d alert messages in an hour; the rest are on "
                            "/alerts, not sent", machine[:64], MACHINE_PER_HOUR)
            return
        self._held_back.discard(machine)
        recent.append(now)
        # queued as at the alert's own time (due at once): nothing finer than the machine said
        at = min(at, now)
        for address in r.email:
            self.store.alerts.queue_delivery(route, "email", address, body, at)
        if r.webhook:
            self.store.alerts.queue_delivery(route, "webhook", r.webhook, body, at)

    # -- delivery ---------------------------------------------------------------------------
    def deliver(self) -> int:
        """Send what is due; returns how many were sent."""
        now = self.clock.now()
        sent = 0
        for delivery, channel, target, body, attempts in self.store.alerts.due_deliveries(now, 100):
            route = self.store.alerts.delivery_route(delivery)
            recent = self._sent.setdefault(route, deque())
            while recent and (now - recent[0]).total_seconds() >= 60:
                recent.popleft()
            if len(recent) >= ROUTE_PER_MINUTE:  # in any 60 s, not in each round
                retry = recent[0] + timedelta(seconds=60)
                self.store.alerts.delivery_failed(delivery, "held back: too many in a minute",
                                           retry, now, count=False)
                continue
            recent.append(now)
            try:
                if channel == "email":
                    self._email(target, body)
                else:
                    self._webhook(target, body)
            except (OSError, smtplib.SMTPException, urllib.error.URLError, ValueError) as e:
                retry = (now + timedelta(seconds=RETRIES[attempts])
                         if attempts < len(RETRIES) else None)
                self.store.alerts.delivery_failed(delivery, str(e), retry, now)
                log.warning("could not deliver an alert to %s (%s): %s%s", target, channel, e,
                            "; will retry" if retry else "; giving up")
                continue
            self.store.alerts.delivered(delivery, now)
            sent += 1
        return sent

    def _email(self, address: str, body: dict) -> None:
        message = EmailMessage()
        name = body.get("name") or self.config.name_of(body["machine"])
        # the detail holds what machines said (a product's name): one line, or no email
        message["Subject"] = humane.one_line(f"[nspvend] {name}: {body['detail']}", 200)
        message["From"] = self.config.email_from
        message["To"] = address
        at = humane.when(body["ts"], self.config.tz, datetime.now(UTC))
        said = "Raised" if body["state"] == "raised" else "Cleared"
        message.set_content(
            f"{name} ({body['machine']})\n\n{body['detail']}\n{said} {at}.\n\n"
            f"See the machine: {body['url']}\nAll alerts: {self.config.base_url}alerts\n")
        with smtplib.SMTP(self.config.smtp_host or "localhost", self.config.smtp_port,
                          timeout=10) as smtp:
            smtp.send_message(message)

    def _webhook(self, url: str, body: dict) -> None:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (configured)
            if response.status >= 300:
                raise ValueError(f"the webhook answered {response.status}")

"""What the hub keeps: machines, usage, events, commands, users, sessions and alerts, in its
own SQLite file (sqlite-utils; the embedded default) or in PostgreSQL (psycopg 3) for a
fleet past one box.

Exactly once: a usage bucket is keyed on its ``id`` (a bucket heard twice counts once, even
by two hub processes at the same moment: the database's unique key decides), an event on
its ``id``. Confirmed and unconfirmed counts stay apart. :class:`HubStore` holds every query,
in SQL both databases read; :class:`SqliteStore` and :class:`PgStore` bring the connection,
the transactions, the schema versions (code, one step a version, as on the machine) and
the lease that lets one hub process of several run the alerts. One connection per store,
used under a lock by the listener, the web pages and the alerts.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from controller.clock import iso, parse_iso
from controller.messages import (
    ONLINE,
    CommandResult,
    EventMessage,
    StateMessage,
    StockMessage,
    UsageMessage,
    compact,
)

log = logging.getLogger(__name__)


def _v1(db: sqlite_utils.Database) -> None:
    db["machines"].create({
        "id": str, "first_heard": str, "last_heard": str, "availability": str,
        "availability_since": str, "state": str, "state_at": str, "stock": str, "stock_at": str,
        "last_pack": str,
    }, pk="id", if_not_exists=True)
    db["buckets"].create({"id": str, "machine": str, "start": str, "end": str,
                          "clock_synced": int, "received": str}, pk="id", if_not_exists=True)
    db["bucket_counts"].create({"bucket_id": str, "product": str, "confirmed": int,
                                "unconfirmed": int}, pk=("bucket_id", "product"),
                               if_not_exists=True)
    db["events"].create({"id": str, "machine": str, "ts": str, "type": str, "slot": int,
                         "product": str, "detail": str, "received": str}, pk="id",
                        if_not_exists=True)
    db["commands"].create({"id": str, "machine": str, "user": str, "sent": str, "command": str,
                           "answered": str, "ok": int, "answer": str}, pk="id",
                          if_not_exists=True)
    db["users"].create({"name": str, "role": str, "hash": str, "created": str}, pk="name",
                       if_not_exists=True)
    db["sessions"].create({"token": str, "user": str, "csrf": str, "created": str,
                           "seen": str}, pk="token", if_not_exists=True)
    db["login_failures"].create({"who": str, "failures": int, "last": str}, pk="who",
                                if_not_exists=True)
    db["alerts"].create({"machine": str, "type": str, "subject": str, "raised": str,
                         "cleared": str, "detail": str, "told": str},
                        pk=("machine", "type", "subject"), if_not_exists=True)
    db["deliveries"].create({"id": int, "route": int, "channel": str, "target": str,
                             "body": str, "created": str, "attempts": int, "next_try": str,
                             "done": str, "error": str}, pk="id", if_not_exists=True)
    # per machine and UTC day, added to as each new bucket is stored: reports read these
    db["daily_counts"].create({"machine": str, "day": str, "product": str, "confirmed": int,
                               "unconfirmed": int}, pk=("machine", "day", "product"),
                              if_not_exists=True)
    db["daily_cover"].create({"machine": str, "day": str, "seconds": float, "buckets": int},
                             pk=("machine", "day"), if_not_exists=True)
    db.execute("CREATE INDEX IF NOT EXISTS buckets_by_start ON buckets (start, machine)")
    db.execute("CREATE INDEX IF NOT EXISTS daily_by_day ON daily_counts (day)")
    db.execute("CREATE INDEX IF NOT EXISTS cover_by_day ON daily_cover (day)")
    db.execute("CREATE INDEX IF NOT EXISTS events_by_machine ON events (machine, ts)")
    db.execute("CREATE INDEX IF NOT EXISTS deliveries_waiting ON deliveries (done, next_try)")


def _v2(db: sqlite_utils.Database) -> None:
    # silence is kept on the machine (raised by its event, cleared by a later pack) so any
    # hub process can store it and the one that runs the alerts sees it
    db["machines"].add_column("silence", str)
    db["machines"].add_column("silence_at", str)


V3 = [  # what the hourly clearing out looks for, without reading every row
    "CREATE INDEX IF NOT EXISTS events_by_received ON events (received)",
    'CREATE INDEX IF NOT EXISTS commands_by_user ON commands ("user", sent)',
    "CREATE INDEX IF NOT EXISTS deliveries_by_created ON deliveries (created)",
]


def _v3(db: sqlite_utils.Database) -> None:
    for statement in V3:
        db.execute(statement)


def _v4(db: sqlite_utils.Database) -> None:
    # every alert raised, for the alerts page and staff's "I'm on it" (the alerts table keeps
    # only each condition's latest)
    db["alert_log"].create({"id": int, "machine": str, "type": str, "subject": str,
                            "detail": str, "raised": str, "cleared": str, "acked_by": str,
                            "acked_at": str}, pk="id", if_not_exists=True)
    for statement in V4:
        db.execute(statement)


V4 = [
    "CREATE INDEX IF NOT EXISTS alert_log_open ON alert_log (machine, type, subject, cleared)",
    "CREATE INDEX IF NOT EXISTS alert_log_raised ON alert_log (raised)",
    "INSERT INTO alert_log (machine, type, subject, detail, raised) SELECT machine, type,"
    " subject, detail, raised FROM alerts WHERE cleared IS NULL",
]
def _v5(db: sqlite_utils.Database) -> None:
    # machines staff enrolled (`nspvend hub machine add`), and ids heard that nobody did
    db["enrolled"].create({"id": str, "name": str, "area": str, "place": str, "key_file": str,
                           "enrolled": str}, pk="id", if_not_exists=True)
    db["asking"].create({"id": str, "first_heard": str, "last_heard": str}, pk="id",
                        if_not_exists=True)
    db.execute(V5_KNOWN)


# a hub that took every id before enrolment: the machines it has heard stay known
V5_KNOWN = ("INSERT INTO enrolled (id, name, enrolled) SELECT id, id, first_heard FROM machines"
            " WHERE id NOT IN (SELECT id FROM enrolled)")


def _v6(db: sqlite_utils.Database) -> None:
    # counts from people (the tally page): a bucket per person, channel and hour, its counts
    # replaced by each send of it (the page sends the hour's totals so far), never a tap's time
    db["tallies"].create({"id": str, "channel": str, "start": str, "end": str, "user": str,
                          "version": int}, pk="id", if_not_exists=True)
    db["tally_counts"].create({"tally_id": str, "product": str, "count": int},
                              pk=("tally_id", "product"), if_not_exists=True)
    for statement in V6:
        db.execute(statement)


V6 = ["CREATE INDEX IF NOT EXISTS tallies_by_start ON tallies (start, channel)",
      'CREATE INDEX IF NOT EXISTS tallies_by_user ON tallies ("user", start)',
      # who did what: the commands and acknowledgements of the last days, without every row
      "CREATE INDEX IF NOT EXISTS commands_by_sent ON commands (sent)",
      "CREATE INDEX IF NOT EXISTS alert_log_acked ON alert_log (acked_at)"]


def _v7(db: sqlite_utils.Database) -> None:
    # packs staff took out past their date (a machine's expired_removed event): the reports'
    # waste, kept after the events themselves are cleared out
    db["expired_removals"].create({"event_id": str, "machine": str, "ts": str, "product": str,
                                   "packs": int}, pk="event_id", if_not_exists=True)
    db.execute(V7)


V7 = "CREATE INDEX IF NOT EXISTS expired_by_ts ON expired_removals (ts)"


def _v8(db: sqlite_utils.Database) -> None:
    # per machine and UTC month, as the daily roll-ups: a year's report adds up twelve rows a
    # machine and product, not 365 (filled from the daily ones on upgrade)
    db["monthly_counts"].create({"machine": str, "month": str, "product": str, "confirmed": int,
                                 "unconfirmed": int}, pk=("machine", "month", "product"),
                                if_not_exists=True)
    db["monthly_cover"].create({"machine": str, "month": str, "seconds": float, "buckets": int},
                               pk=("machine", "month"), if_not_exists=True)
    for statement in V8:
        db.execute(statement)


V8 = ["CREATE INDEX IF NOT EXISTS monthly_by_month ON monthly_counts (month)",
      "CREATE INDEX IF NOT EXISTS monthly_cover_by_month ON monthly_cover (month)",
      "INSERT INTO monthly_counts (machine, month, product, confirmed, unconfirmed)"
      " SELECT machine, substr(day, 1, 7), product, sum(confirmed), sum(unconfirmed)"
      " FROM daily_counts GROUP BY machine, substr(day, 1, 7), product",
      "INSERT INTO monthly_cover (machine, month, seconds, buckets) SELECT machine,"
      " substr(day, 1, 7), sum(seconds), sum(buckets) FROM daily_cover"
      " GROUP BY machine, substr(day, 1, 7)"]


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7,
                                                            _v8]
SCHEMA_VERSION = len(MIGRATIONS)

T = 'TEXT COLLATE "C"'  # ISO times and days compare as bytes, whatever the server's locale
PG_MIGRATIONS: list[list[str]] = [
    [
        f"CREATE TABLE machines (id {T} PRIMARY KEY, first_heard {T}, last_heard {T},"
        f" availability {T}, availability_since {T}, state TEXT, state_at {T}, stock TEXT,"
        f" stock_at {T}, last_pack {T})",
        f'CREATE TABLE buckets (id {T} PRIMARY KEY, machine {T}, start {T}, "end" {T},'
        f" clock_synced INTEGER, received {T})",
        f"CREATE TABLE bucket_counts (bucket_id {T}, product {T}, confirmed INTEGER,"
        f" unconfirmed INTEGER, PRIMARY KEY (bucket_id, product))",
        f"CREATE TABLE events (id {T} PRIMARY KEY, machine {T}, ts {T}, type {T}, slot INTEGER,"
        f" product {T}, detail TEXT, received {T})",
        f'CREATE TABLE commands (id {T} PRIMARY KEY, machine {T}, "user" {T}, sent {T},'
        f" command TEXT, answered {T}, ok INTEGER, answer TEXT,"
        f" seq BIGINT GENERATED BY DEFAULT AS IDENTITY)",
        f"CREATE TABLE users (name {T} PRIMARY KEY, role {T}, hash TEXT, created {T})",
        f'CREATE TABLE sessions (token {T} PRIMARY KEY, "user" {T}, csrf TEXT, created {T},'
        f" seen {T})",
        f"CREATE TABLE login_failures (who {T} PRIMARY KEY, failures INTEGER, last {T})",
        f"CREATE TABLE alerts (machine {T}, type {T}, subject {T}, raised {T}, cleared {T},"
        f" detail TEXT, told TEXT, PRIMARY KEY (machine, type, subject))",
        f"CREATE TABLE deliveries (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        f" route INTEGER, channel {T}, target TEXT, body TEXT, created {T}, attempts INTEGER,"
        f" next_try {T}, done {T}, error TEXT)",
        f"CREATE TABLE daily_counts (machine {T}, day {T}, product {T}, confirmed INTEGER,"
        f" unconfirmed INTEGER, PRIMARY KEY (machine, day, product))",
        f"CREATE TABLE daily_cover (machine {T}, day {T}, seconds DOUBLE PRECISION,"
        f" buckets INTEGER, PRIMARY KEY (machine, day))",
        "CREATE INDEX buckets_by_start ON buckets (start, machine)",
        "CREATE INDEX daily_by_day ON daily_counts (day)",
        "CREATE INDEX cover_by_day ON daily_cover (day)",
        "CREATE INDEX events_by_machine ON events (machine, ts)",
        "CREATE INDEX deliveries_waiting ON deliveries (done, next_try)",
    ],
    [f"ALTER TABLE machines ADD COLUMN silence TEXT, ADD COLUMN silence_at {T}"],
    V3,
    [f"CREATE TABLE alert_log (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
     f" machine {T}, type {T}, subject {T}, detail TEXT, raised {T}, cleared {T},"
     f" acked_by TEXT, acked_at {T})", *V4],
    [f"CREATE TABLE IF NOT EXISTS enrolled (id {T} PRIMARY KEY, name TEXT, area TEXT,"
     f" place TEXT, key_file TEXT, enrolled {T})",
     f"CREATE TABLE IF NOT EXISTS asking (id {T} PRIMARY KEY, first_heard {T},"
     f" last_heard {T})", V5_KNOWN],
    [f'CREATE TABLE tallies (id {T} PRIMARY KEY, channel {T}, start {T}, "end" {T}, "user" {T},'
     " version BIGINT)",
     f"CREATE TABLE tally_counts (tally_id {T}, product {T}, count INTEGER,"
     f" PRIMARY KEY (tally_id, product))", *V6],
    [f"CREATE TABLE expired_removals (event_id {T} PRIMARY KEY, machine {T}, ts {T},"
     f" product {T}, packs INTEGER)", V7],
    # INTEGER as the daily ones (sum() of a BIGINT is a numeric, which Python reads as Decimal)
    [f"CREATE TABLE monthly_counts (machine {T}, month {T}, product {T}, confirmed INTEGER,"
     f" unconfirmed INTEGER, PRIMARY KEY (machine, month, product))",
     f"CREATE TABLE monthly_cover (machine {T}, month {T}, seconds DOUBLE PRECISION,"
     f" buckets INTEGER, PRIMARY KEY (machine, month))", *V8],
]
assert len(PG_MIGRATIONS) == SCHEMA_VERSION
CATCH_UP = "hub (catch-up)"  # who the hub's own questions for buckets are recorded as
LEADER_KEY = 0x6E737076  # "nspv": the advisory lock the hub process running the alerts holds
MACHINE_COLUMNS = ("id, first_heard, last_heard, availability, availability_since, state, stock,"
                   " silence, state_at, stock_at, silence_at, last_pack")


@dataclass(frozen=True)
class Tally:
    """A tally bucket as the page sends it: its id, channel, hour, the counts so far and
    their version (one more at each change on the page)."""

    id: str
    channel: str
    start: str
    end: str
    counts: dict[str, int]
    version: int = 1


@dataclass(frozen=True)
class Machine:
    """What the hub knows of one machine."""

    id: str
    first_heard: str | None
    last_heard: str | None
    availability: str | None
    availability_since: str | None
    state: StateMessage | None
    stock: StockMessage | None
    silence: str | None = None  # the detail of a silence event not yet followed by a pack
    # when the latest state, stock and silence were told (their ``ts``, see hub.listener),
    # and the end of the latest bucket with a pack
    state_at: str | None = None
    stock_at: str | None = None
    silence_at: str | None = None
    last_pack: str | None = None


class HubStore:
    """Every query the hub makes, for either database (see :func:`open_store`)."""

    kind = ""
    _order = "rowid"  # what keeps commands in the order they were recorded

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def close(self) -> None:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield

    def _x(self, sql: str, params: tuple | list = ()) -> Any:
        raise NotImplementedError

    def lead(self) -> bool:
        """Whether this process runs the alerts: it holds (or has just taken) the lease that
        one process of several holds at a time. Taken again by another when this one dies."""
        raise NotImplementedError

    def unavailable(self, error: BaseException) -> bool:
        """Whether ``error`` says the database is away or busy (try again later), rather
        than that it refuses what was asked of it."""
        raise NotImplementedError

    def backup(self, destination: str) -> None:
        raise NotImplementedError

    # -- what machines say ---------------------------------------------------------------
    def heard(self, machine: str, at: datetime) -> None:
        """Any message from ``machine`` (inside a transaction)."""
        self.heard_from([machine], at)

    def heard_from(self, machines: list[str], at: datetime) -> None:
        """Messages from each of ``machines`` (each once, in one order for every process, so
        that two processes' batches never wait for each other in a circle; inside a
        transaction): a statement for up to 500."""
        for chunk in _chunks(sorted(set(machines)), 500):
            marks = ", ".join(["(?, ?, ?)"] * len(chunk))
            self._x(f"INSERT INTO machines (id, first_heard, last_heard) VALUES {marks}"
                    " ON CONFLICT(id) DO UPDATE SET last_heard = excluded.last_heard",
                    [v for m in chunk for v in (m, iso(at), iso(at))])

    def record_availability(self, machine: str, value: str, at: datetime) -> None:
        self._x("UPDATE machines SET availability_since = CASE WHEN coalesce(availability, '')"
                " = ? THEN availability_since ELSE ? END, availability = ? WHERE id = ?",
                (value, iso(at), value, machine))

    def record_state(self, machine: str, state: StateMessage, at: datetime) -> None:
        self._x("UPDATE machines SET state = ?, state_at = ? WHERE id = ?",
                (state.encode(), iso(at), machine))

    def record_stock(self, machine: str, stock: StockMessage, at: datetime) -> None:
        self._x("UPDATE machines SET stock = ?, stock_at = ? WHERE id = ?",
                (stock.encode(), iso(at), machine))

    def record_usage(self, machine: str, usage: UsageMessage, at: datetime) -> bool:
        """Keep a bucket once: True if it was new, False if heard before (not counted again)."""
        return self.record_usages([(machine, usage)], at)[0]

    def record_usages(self, items: list[tuple[str, UsageMessage]], at: datetime) -> list[bool]:
        """Keep each ``(machine, bucket)`` once (inside the caller's transaction): for each,
        True if it was new, False if heard before, or earlier in ``items``. A handful of
        statements however many buckets (each a round trip to a database server): the new
        ones found by one insert that says which it inserted, then their counts, the daily
        roll-ups (added up here first, a row per key) and each machine's last pack."""
        if not items:
            return []
        inserted: set[str] = set()
        rows = [(u.id, m, u.start, u.end, int(u.clock_synced), iso(at)) for m, u in items]
        for chunk in _chunks(rows, 400):
            marks = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
            inserted |= {r[0] for r in self._x(
                f'INSERT INTO buckets (id, machine, start, "end", clock_synced, received)'
                f" VALUES {marks} ON CONFLICT DO NOTHING RETURNING id",
                [v for row in chunk for v in row]).fetchall()}
        flags: list[bool] = []
        fresh: list[tuple[str, UsageMessage]] = []
        for machine, usage in items:
            new = usage.id in inserted
            inserted.discard(usage.id)  # the same bucket twice in one batch: the first counts
            flags.append(new)
            if new:
                fresh.append((machine, usage))
        if not fresh:
            return flags
        counts: list[tuple[str, str, int, int]] = []
        daily: dict[tuple[str, str, str], list[int]] = {}
        cover: dict[tuple[str, str], list[float]] = {}
        last: dict[str, str] = {}
        for machine, usage in fresh:
            products = sorted(set(usage.counts) | set(usage.unconfirmed))
            day = usage.start[:10]
            for product in products:
                c, u = usage.counts.get(product, 0), usage.unconfirmed.get(product, 0)
                counts.append((usage.id, product, c, u))
                total = daily.setdefault((machine, day, product), [0, 0])
                total[0] += c
                total[1] += u
            if any(usage.counts.values()) or any(usage.unconfirmed.values()):
                last[machine] = max(last.get(machine, usage.end), usage.end)
            for cover_day, seconds, first in _days_covered(usage.start, usage.end):
                share = cover.setdefault((machine, cover_day), [0.0, 0])
                share[0] += seconds
                share[1] += first
        for chunk in _chunks(counts, 500):
            marks = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            self._x(f"INSERT INTO bucket_counts (bucket_id, product, confirmed, unconfirmed)"
                    f" VALUES {marks}", [v for row in chunk for v in row])
        monthly: dict[tuple[str, str, str], list[int]] = {}
        for (machine, day, product), (c, u) in daily.items():
            total = monthly.setdefault((machine, day[:7], product), [0, 0])
            total[0] += c
            total[1] += u
        month_cover: dict[tuple[str, str], list[float]] = {}
        for (machine, day), (sec, n) in cover.items():
            share = month_cover.setdefault((machine, day[:7]), [0.0, 0])
            share[0] += sec
            share[1] += n
        self._add_up("daily_counts", ("machine", "day", "product"), ("confirmed", "unconfirmed"),
                     daily)
        self._add_up("daily_cover", ("machine", "day"), ("seconds", "buckets"), cover)
        self._add_up("monthly_counts", ("machine", "month", "product"),
                     ("confirmed", "unconfirmed"), monthly)
        self._add_up("monthly_cover", ("machine", "month"), ("seconds", "buckets"),
                     month_cover)
        for chunk in _chunks(sorted(last.items()), 400):
            # a pack ends a silence told before it; the latest bucket with a pack is kept
            values = " UNION ALL ".join(["SELECT ? AS id, ? AS e"] * len(chunk))
            self._x("UPDATE machines SET"
                    " last_pack = CASE WHEN last_pack IS NULL OR last_pack < v.e THEN v.e"
                    " ELSE last_pack END,"
                    " silence = CASE WHEN silence_at < v.e THEN NULL ELSE silence END,"
                    " silence_at = CASE WHEN silence_at < v.e THEN NULL ELSE silence_at END"
                    f" FROM ({values}) AS v WHERE machines.id = v.id",
                    [x for row in chunk for x in row])
        return flags

    def _add_up(self, table: str, keys: tuple[str, ...], values: tuple[str, ...],
                rows: dict[tuple, list]) -> None:
        """Add ``rows`` (key -> values, one row a key) to the roll-up ``table``."""
        added = ", ".join(f"{v} = {table}.{v} + excluded.{v}" for v in values)
        width = len(keys) + len(values)
        for chunk in _chunks(sorted(rows.items()), 400):
            marks = ", ".join(["(" + ", ".join("?" * width) + ")"] * len(chunk))
            self._x(f"INSERT INTO {table} ({', '.join(keys + values)}) VALUES {marks}"
                    f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}",
                    [v for key, numbers in chunk for v in (*key, *numbers)])

    def record_event(self, machine: str, event: EventMessage, at: datetime) -> bool:
        cursor = self._x("INSERT INTO events (id, machine, ts, type, slot, product, detail,"
                         " received) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (event.id, machine, event.ts, event.type, event.slot, event.product,
                          event.detail, iso(at)))
        new = cursor.rowcount == 1
        if new and event.type == "expired_removed" and event.count and event.product:
            self._x("INSERT INTO expired_removals (event_id, machine, ts, product, packs) VALUES"
                    " (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (event.id, machine, event.ts, event.product, event.count))
        if new and event.type == "silence":  # until a pack comes after it
            self._x("UPDATE machines SET silence = ?, silence_at = ? WHERE id = ? AND"
                    " (last_pack IS NULL OR last_pack < ?)",
                    (event.detail or "no pack dispensed", event.ts, machine, event.ts))
        return new

    def record_result(self, machine: str, result: CommandResult, at: datetime) -> None:
        """A machine's answer to a command the hub sent (others' answers are ignored)."""
        self._x("UPDATE commands SET answered = ?, ok = ?, answer = ? WHERE id = ? AND machine = ?"
                " AND answered IS NULL",
                (iso(at), int(result.ok), compact(result.payload()), result.id, machine))

    # -- reading it back -----------------------------------------------------------------
    def machines(self, ids: set[str] | None = None) -> list[Machine]:
        """Every machine heard (or those of ``ids``), by id."""
        if ids is None:
            rows = self._x(f"SELECT {MACHINE_COLUMNS} FROM machines ORDER BY id").fetchall()
        else:
            rows = []
            wanted = sorted(ids)
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                rows += self._x(f"SELECT {MACHINE_COLUMNS} FROM machines WHERE id IN"
                                f" ({','.join('?' * len(chunk))}) ORDER BY id", chunk).fetchall()
        return [_machine(row) for row in rows]

    def online(self) -> list[str]:
        """The machines whose last word was that they are online, by id."""
        return [row[0] for row in self._x("SELECT id FROM machines WHERE availability = ?"
                                          " ORDER BY id", (ONLINE,)).fetchall()]

    def machine(self, machine_id: str) -> Machine | None:
        row = self._x(f"SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?",
                      (machine_id,)).fetchone()
        return _machine(row) if row else None

    def events(self, machine: str | None = None, limit: int = 50) -> list[dict]:
        where, params = ("WHERE machine = ?", [machine]) if machine else ("", [])
        rows = self._x(f"SELECT id, machine, ts, type, slot, product, detail FROM events {where}"
                       " ORDER BY ts DESC, received DESC LIMIT ?", [*params, limit]).fetchall()
        keys = ("id", "machine", "ts", "type", "slot", "product", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def period_counts(self, start: str, end: str, machines: list[str] | None = None
                      ) -> list[tuple[str, str, int, int]]:
        """``(machine, product, confirmed, unconfirmed)`` for buckets that start in [start,
        end) (ISO instants): the whole UTC months inside from the monthly roll-ups, the whole
        days left from the daily ones, added up by the database, and the hours at either edge
        (a local day is not a UTC day in summer) from the buckets themselves."""
        months, days, edges = _split(start, end)
        only = ""
        extra: list[Any] = []
        if machines is not None:
            only = f" AND machine IN ({','.join('?' * len(machines))})"
            extra = list(machines)
        found: dict[tuple[str, str], list[int]] = {}
        rows: list[tuple] = []
        if months:
            rows += self._x("SELECT machine, product, sum(confirmed), sum(unconfirmed) FROM"
                            f" monthly_counts WHERE month >= ? AND month < ?{only}"
                            " GROUP BY machine, product", [*months, *extra]).fetchall()
        for span in days:
            rows += self._x("SELECT machine, product, sum(confirmed), sum(unconfirmed) FROM"
                            f" daily_counts WHERE day >= ? AND day < ?{only}"
                            " GROUP BY machine, product", [*span, *extra]).fetchall()
        for a, b in edges:
            rows += self._x("SELECT b.machine, c.product, sum(c.confirmed), sum(c.unconfirmed)"
                            " FROM buckets b JOIN bucket_counts c ON c.bucket_id = b.id"
                            f" WHERE b.start >= ? AND b.start < ?{only.replace('machine', 'b.machine')}"
                            " GROUP BY b.machine, c.product", [a, b, *extra]).fetchall()
        for machine, product, confirmed, unconfirmed in rows:
            total = found.setdefault((machine, product), [0, 0])
            total[0] += confirmed or 0
            total[1] += unconfirmed or 0
        return [(m, p, c, u) for (m, p), (c, u) in sorted(found.items())]

    def period_cover(self, start: str, end: str) -> list[tuple[str, float]]:
        """``(machine, seconds)``: how much of [start, end) the machine's buckets cover (a
        bucket across a UTC midnight, or across either end, counts its part on each side)."""
        return [(m, seconds) for m, (seconds, _) in sorted(self._cover(start, end).items())]

    def _cover(self, start: str, end: str) -> dict[str, tuple[float, int]]:
        months, days, edges = _split(start, end)
        found: dict[str, tuple[float, int]] = {}

        def add(machine: str, seconds: float, buckets: int) -> None:
            was = found.get(machine, (0.0, 0))
            found[machine] = (was[0] + (seconds or 0.0), was[1] + (buckets or 0))

        if months:
            for machine, seconds, buckets in self._x(
                    "SELECT machine, sum(seconds), sum(buckets) FROM monthly_cover WHERE"
                    " month >= ? AND month < ? GROUP BY machine", months).fetchall():
                add(machine, seconds, buckets)
        for span in days:
            for machine, seconds, buckets in self._x(
                    "SELECT machine, sum(seconds), sum(buckets) FROM daily_cover WHERE day >= ?"
                    " AND day < ? GROUP BY machine", span).fetchall():
                add(machine, seconds, buckets)
        for a, b in edges:
            # the part of each bucket inside [a, b), as the roll-ups count a bucket across
            # midnight; a bucket is counted where it starts (buckets last at most a day)
            since, until = parse_iso(a), parse_iso(b)
            for machine, s, e in self._x(
                    'SELECT machine, start, "end" FROM buckets WHERE start >= ? AND start < ?'
                    ' AND "end" > ?', (iso(since - timedelta(days=1)), b, a)).fetchall():
                began = parse_iso(s)
                inside = (min(parse_iso(e), until) - max(began, since)).total_seconds()
                add(machine, max(0.0, inside), int(began >= since))
        return found

    def usage_totals(self, start: str, end: str) -> list[tuple[str, str, int, int, int]]:
        """``(machine, product, confirmed, unconfirmed, buckets)`` for buckets starting in
        [start, end)."""
        cover = self._cover(start, end)
        return [(m, p, c, u, cover.get(m, (0.0, 0))[1])
                for m, p, c, u in self.period_counts(start, end)]

    def expired_totals(self, start: str, end: str) -> list[tuple[str, int]]:
        """``(product, packs)`` staff took out past their date in [start, end)."""
        return [tuple(r) for r in self._x(
            "SELECT product, sum(packs) FROM expired_removals WHERE ts >= ? AND ts < ?"
            " GROUP BY product ORDER BY product", (start, end)).fetchall()]

    def last_packs(self) -> dict[str, str]:
        """Per machine, the end of its latest bucket that held a pack."""
        return dict(self._x("SELECT id, last_pack FROM machines WHERE last_pack IS NOT NULL"
                            ).fetchall())

    def recent_usage(self, machine: str, since: str) -> dict[str, tuple[int, float]]:
        """Per product: packs (confirmed + unconfirmed) since ``since``, and the hours of
        buckets they came in."""
        rows = self._x("SELECT c.product, sum(c.confirmed + c.unconfirmed) FROM buckets b"
                       " JOIN bucket_counts c ON c.bucket_id = b.id"
                       " WHERE b.machine = ? AND b.start >= ? GROUP BY c.product",
                       (machine, since)).fetchall()
        spans = self._x('SELECT start, "end" FROM buckets WHERE machine = ? AND start >= ?',
                        (machine, since)).fetchall()
        hours = sum((parse_iso(e) - parse_iso(s)).total_seconds() for s, e in spans) / 3600
        return {product: (packs, hours) for product, packs in rows}

    # -- counts from people (the tally page) ----------------------------------------------
    def record_tally(self, tally: Tally, user: str) -> str:
        """Keep a tally bucket, its counts replacing what an earlier send of it said (the page
        sends the hour's totals so far, each change a higher ``version``, so a resend counts
        once and a send overtaken by a later one changes nothing): ``new``, ``updated`` or
        ``same``; ``taken`` (nothing changed) when the id is another person's, channel's or
        hour's."""
        counts = sorted((p, n) for p, n in tally.counts.items() if n)
        with self.transaction():
            created = self._x('INSERT INTO tallies (id, channel, start, "end", "user", version)'
                              " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              (tally.id, tally.channel, tally.start, tally.end, user,
                               tally.version)).rowcount
            if created:
                outcome = "new"
            else:
                # a no-op update takes the row's lock (PostgreSQL), so that two sends of one
                # bucket at once take turns
                self._x('UPDATE tallies SET "user" = "user" WHERE id = ?', (tally.id,))
                row = self._x('SELECT channel, start, "end", "user", version FROM tallies'
                              " WHERE id = ?", (tally.id,)).fetchone()
                if tuple(row[:4]) != (tally.channel, tally.start, tally.end, user):
                    return "taken"
                if tally.version <= row[4]:
                    return "same"
                self._x("UPDATE tallies SET version = ? WHERE id = ?", (tally.version, tally.id))
                self._x("DELETE FROM tally_counts WHERE tally_id = ?", (tally.id,))
                outcome = "updated"
            if counts:
                marks = ", ".join(["(?, ?, ?)"] * len(counts))
                self._x(f"INSERT INTO tally_counts (tally_id, product, count) VALUES {marks}",
                        [v for p, n in counts for v in (tally.id, p, n)])
        return outcome

    def tally_totals(self, start: str, end: str) -> tuple[list[tuple[str, str, int]],
                                                          dict[str, int]]:
        """``(channel, product, count)`` for tally buckets starting in [start, end), and the
        buckets per channel."""
        rows = self._x("SELECT t.channel, c.product, sum(c.count) FROM tallies t JOIN"
                       " tally_counts c ON c.tally_id = t.id WHERE t.start >= ? AND t.start < ?"
                       " GROUP BY t.channel, c.product ORDER BY t.channel, c.product",
                       (start, end)).fetchall()
        buckets = self._x("SELECT channel, count(*) FROM tallies WHERE start >= ? AND start < ?"
                          " GROUP BY channel", (start, end)).fetchall()
        return [tuple(r) for r in rows], dict(buckets)

    def tally_activity(self, since: str, limit: int = 500) -> list[tuple[str, str, str, str, int]]:
        """Who tallied what: ``(user, hour start, hour end, channel, packs)``, latest first."""
        rows = self._x('SELECT t."user", t.start, t."end", t.channel, sum(coalesce(c.count, 0))'
                       " FROM tallies t LEFT JOIN tally_counts c ON c.tally_id = t.id"
                       ' WHERE t.start >= ? GROUP BY t."user", t.start, t."end", t.channel'
                       ' ORDER BY t.start DESC, t."user", t.channel LIMIT ?',
                       (since, limit)).fetchall()
        return [tuple(r) for r in rows]

    # -- commands ------------------------------------------------------------------------
    def record_command(self, command_id: str, machine: str, user: str, command: dict,
                       at: datetime) -> None:
        self._x('INSERT INTO commands (id, machine, "user", sent, command) VALUES (?, ?, ?, ?, ?)',
                (command_id, machine, user, iso(at), compact(command)))

    def command(self, command_id: str) -> dict | None:
        row = self._x('SELECT id, machine, "user", sent, command, answered, ok, answer FROM'
                      " commands WHERE id = ?", (command_id,)).fetchone()
        return _command(row) if row else None

    def commands(self, machine: str, limit: int = 30) -> list[dict]:
        rows = self._x('SELECT id, machine, "user", sent, command, answered, ok, answer FROM'
                       f" commands WHERE machine = ? ORDER BY sent DESC, {self._order} DESC"
                       " LIMIT ?", (machine, limit)).fetchall()
        return [_command(r) for r in rows]

    def staff_actions(self, since: str, limit: int = 500) -> list[dict]:
        """What people did since ``since``, latest first: commands sent (``command``) and
        alerts acknowledged (``ack``), each with who and when. Tallies are by hour
        (:meth:`tally_activity`)."""
        commands = self._x('SELECT sent, "user", machine, command, ok, answered FROM commands'
                           ' WHERE sent >= ? AND "user" <> ? ORDER BY sent DESC LIMIT ?',
                           (since, CATCH_UP, limit)).fetchall()
        acks = self._x("SELECT acked_at, acked_by, machine, type, subject FROM alert_log"
                       " WHERE acked_at >= ? ORDER BY acked_at DESC LIMIT ?",
                       (since, limit)).fetchall()
        out = [{"kind": "command", "at": at, "user": user, "machine": machine,
                "command": json.loads(command), "ok": None if ok is None else bool(ok),
                "answered": answered}
               for at, user, machine, command, ok, answered in commands]
        out += [{"kind": "ack", "at": at, "user": user, "machine": machine, "type": kind,
                 "subject": subject} for at, user, machine, kind, subject in acks]
        return sorted(out, key=lambda a: a["at"], reverse=True)[:limit]

    # -- users and sessions --------------------------------------------------------------
    def set_user(self, name: str, role: str, password_hash: str, at: datetime) -> None:
        """Add a user, or give one a new role and password: their sessions end."""
        self._x('DELETE FROM sessions WHERE "user" = ?', (name,))
        self._x("INSERT INTO users (name, role, hash, created) VALUES (?, ?, ?, ?) ON CONFLICT"
                "(name) DO UPDATE SET role = excluded.role, hash = excluded.hash",
                (name, role, password_hash, iso(at)))

    def remove_user(self, name: str) -> bool:
        with self.transaction():
            self._x('DELETE FROM sessions WHERE "user" = ?', (name,))
            return self._x("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def user(self, name: str) -> tuple[str, str] | None:
        """``(role, hash)`` of user ``name``."""
        row = self._x("SELECT role, hash FROM users WHERE name = ?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def users(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self._x("SELECT name, role, created FROM users ORDER BY name"
                                          ).fetchall()]

    def new_session(self, token: str, user: str, csrf: str, at: datetime) -> None:
        self._x('INSERT INTO sessions (token, "user", csrf, created, seen) VALUES (?, ?, ?, ?, ?)',
                (token, user, csrf, iso(at), iso(at)))

    def session(self, token: str) -> tuple[str, str, str, str] | None:
        """``(user, role, csrf, created)`` of a session whose user still exists."""
        row = self._x('SELECT s."user", u.role, s.csrf, s.created FROM sessions s JOIN users u'
                      ' ON u.name = s."user" WHERE s.token = ?', (token,)).fetchone()
        return tuple(row) if row else None

    def end_session(self, token: str) -> None:
        self._x("DELETE FROM sessions WHERE token = ?", (token,))

    def end_sessions_before(self, created: datetime) -> None:
        self._x("DELETE FROM sessions WHERE created < ?", (iso(created),))

    def login_failures(self, who: str) -> tuple[int, str | None]:
        row = self._x("SELECT failures, last FROM login_failures WHERE who = ?", (who,)).fetchone()
        return (row[0], row[1]) if row else (0, None)

    def login_failed(self, who: str, at: datetime) -> None:
        self._x("INSERT INTO login_failures (who, failures, last) VALUES (?, 1, ?) ON CONFLICT"
                "(who) DO UPDATE SET failures = login_failures.failures + 1,"
                " last = excluded.last", (who, iso(at)))

    def login_succeeded(self, who: str) -> None:
        self._x("DELETE FROM login_failures WHERE who = ?", (who,))

    # -- alerts --------------------------------------------------------------------------
    def raised_alerts(self) -> dict[tuple[str, str, str], dict]:
        rows = self._x("SELECT machine, type, subject, raised, detail, told FROM alerts"
                       " WHERE cleared IS NULL").fetchall()
        return {(m, t, s): {"raised": r, "detail": d, "told": told}
                for m, t, s, r, d, told in rows}

    def set_told(self, machine: str, kind: str, subject: str, routes: list[int],
                 was: str | None) -> bool:
        """Which routes have heard this alert raised (so they, and only they, hear it end):
        True if this changed it from ``was`` (the ``told`` read before); False if another
        process told them first."""
        return self._x("UPDATE alerts SET told = ? WHERE machine = ? AND type = ? AND subject = ?"
                       " AND cleared IS NULL AND coalesce(told, '[]') = ?",
                       (json.dumps(routes), machine, kind, subject, was or "[]")).rowcount == 1

    def raise_alert(self, machine: str, kind: str, subject: str, detail: str,
                    at: datetime) -> bool:
        """Raise an alert: True if this raised it (False: it was raised already)."""
        raised = self._x("INSERT INTO alerts (machine, type, subject, raised, cleared, detail, told) VALUES"
                " (?, ?, ?, ?, NULL, ?, '[]') ON CONFLICT(machine, type, subject) DO UPDATE SET"
                " raised = excluded.raised, cleared = NULL, detail = excluded.detail, told = '[]'"
                " WHERE alerts.cleared IS NOT NULL",  # raising a raised alert changes nothing
                (machine, kind, subject, iso(at), detail)).rowcount == 1
        if raised:
            self._x("INSERT INTO alert_log (machine, type, subject, detail, raised) VALUES"
                    " (?, ?, ?, ?, ?)", (machine, kind, subject, detail, iso(at)))
        return raised

    def clear_alert(self, machine: str, kind: str, subject: str, at: datetime) -> bool:
        """Clear a raised alert: True if this cleared it (False: it was not raised)."""
        cleared = self._x("UPDATE alerts SET cleared = ? WHERE machine = ? AND type = ? AND"
                          " subject = ? AND cleared IS NULL",
                          (iso(at), machine, kind, subject)).rowcount == 1
        if cleared:
            self._x("UPDATE alert_log SET cleared = ? WHERE machine = ? AND type = ? AND"
                    " subject = ? AND cleared IS NULL", (iso(at), machine, kind, subject))
        return cleared

    ALERT_KEYS = ("id", "machine", "type", "subject", "detail", "raised", "cleared",
                  "acked_by", "acked_at")

    def alert_log(self, since: datetime) -> list[dict]:
        """Alerts raised now, and those raised or cleared since ``since``: newest first."""
        rows = self._x(f"SELECT {', '.join(self.ALERT_KEYS)} FROM alert_log WHERE cleared IS NULL"
                       " OR cleared >= ? OR raised >= ? ORDER BY raised DESC, id DESC",
                       (iso(since), iso(since))).fetchall()
        return [dict(zip(self.ALERT_KEYS, r, strict=True)) for r in rows]

    def acknowledged(self) -> dict[tuple[str, str, str], tuple[str, str]]:
        """Raised alerts someone is on: (machine, type, subject) -> (who, when)."""
        rows = self._x("SELECT machine, type, subject, acked_by, acked_at FROM alert_log"
                       " WHERE cleared IS NULL AND acked_by IS NOT NULL").fetchall()
        return {(m, t, s): (who, at) for m, t, s, who, at in rows}

    def acknowledge(self, alert: int, user: str, at: datetime) -> bool:
        """Staff ``user`` is on alert ``alert``: True if it is raised and was not taken."""
        return self._x("UPDATE alert_log SET acked_by = ?, acked_at = ? WHERE id = ? AND"
                       " cleared IS NULL AND acked_by IS NULL",
                       (user, iso(at), alert)).rowcount == 1

    def queue_delivery(self, route: int, channel: str, target: str, body: dict,
                       at: datetime) -> None:
        self._x("INSERT INTO deliveries (route, channel, target, body, created, attempts,"
                " next_try) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (route, channel, target, json.dumps(body), iso(at), iso(at)))

    def due_deliveries(self, at: datetime, limit: int = 20,
                       claim_s: float = 60.0) -> list[tuple[int, str, str, dict, int]]:
        """Deliveries due at ``at``, each claimed for ``claim_s`` (its next try moved on), so
        that two processes running the alerts for a moment (as the lease changes hands) do
        not both send it; one not marked delivered or failed by then is tried again."""
        rows = self._x("SELECT id, channel, target, body, attempts, next_try FROM deliveries"
                       " WHERE done IS NULL AND next_try <= ? ORDER BY id LIMIT ?",
                       (iso(at), limit)).fetchall()
        claimed = []
        until = iso(at + timedelta(seconds=claim_s))
        for i, c, t, b, a, due in rows:
            if self._x("UPDATE deliveries SET next_try = ? WHERE id = ? AND done IS NULL"
                       " AND next_try = ?", (until, i, due)).rowcount == 1:
                claimed.append((i, c, t, json.loads(b), a))
        return claimed

    def delivered(self, delivery: int, at: datetime) -> None:
        self._x("UPDATE deliveries SET done = ?, attempts = attempts + 1, error = NULL"
                " WHERE id = ?", (iso(at), delivery))

    def delivery_failed(self, delivery: int, error: str, retry_at: datetime | None,
                        at: datetime, count: bool = True) -> None:
        """Not delivered: try again at ``retry_at``, or (None) give up."""
        self._x("UPDATE deliveries SET attempts = attempts + ?, error = ?, next_try = ?,"
                " done = ? WHERE id = ?",
                (int(count), error[:500], iso(retry_at) if retry_at else None,
                 None if retry_at else "gave up " + iso(at), delivery))

    def ping(self) -> None:
        """A question the database must answer (raises when it cannot)."""
        self._x("SELECT 1").fetchone()

    def deliveries_given_up(self) -> int:
        return self._x("SELECT count(*) FROM deliveries WHERE done LIKE 'gave up%'"
                       ).fetchone()[0]

    def delivery_route(self, delivery: int) -> int:
        return self._x("SELECT route FROM deliveries WHERE id = ?", (delivery,)).fetchone()[0]

    def deliveries(self) -> list[dict]:
        keys = ("id", "route", "channel", "target", "body", "attempts", "done", "error")
        rows = self._x(f"SELECT {', '.join(keys)} FROM deliveries ORDER BY id").fetchall()
        return [{**dict(zip(keys, r, strict=True)), "body": json.loads(r[4])} for r in rows]


    # -- machines the hub knows -----------------------------------------------------------
    def enrol(self, machine: str, name: str, area: str | None, place: str | None,
              key_file: str, at: datetime) -> None:
        """Staff enrolled ``machine`` (or changed its name, area or key)."""
        with self.transaction():
            self._x("INSERT INTO enrolled (id, name, area, place, key_file, enrolled) VALUES"
                    " (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                    " area = excluded.area, place = excluded.place,"
                    " key_file = excluded.key_file", (machine, name, area, place, key_file,
                                                      iso(at)))
            self._x("DELETE FROM asking WHERE id = ?", (machine,))

    def unenrol(self, machine: str) -> bool:
        """``machine`` is no longer known (its history stays in the reports)."""
        with self.transaction():
            # its raised alerts end with it: nothing more is said of a machine removed
            now = iso(datetime.now(UTC))
            self._x("UPDATE alerts SET cleared = ? WHERE machine = ? AND cleared IS NULL",
                    (now, machine))
            self._x("UPDATE alert_log SET cleared = ? WHERE machine = ? AND cleared IS NULL",
                    (now, machine))
            return self._x("DELETE FROM enrolled WHERE id = ?", (machine,)).rowcount == 1

    def enrolled(self) -> list[tuple[str, str, str | None, str | None, str, str]]:
        """``(id, name, area, place, key_file, enrolled)`` of every enrolled machine."""
        return [tuple(r) for r in self._x("SELECT id, name, area, place, key_file, enrolled"
                                          " FROM enrolled ORDER BY id").fetchall()]

    ASKING_AT_MOST = 100

    def ask_to_join(self, machine: str, at: datetime) -> bool:
        """A message under ``machine``'s root, which nobody enrolled: kept among at most
        :attr:`ASKING_AT_MOST` such ids (first and last heard), so that a typo shows and a
        flood of made-up ids grows nothing. True if kept."""
        with self.transaction():
            if self._x("UPDATE asking SET last_heard = ? WHERE id = ?",
                       (iso(at), machine)).rowcount == 1:
                return True
            if self._x("SELECT count(*) FROM asking").fetchone()[0] >= self.ASKING_AT_MOST:
                return False
            self._x("INSERT INTO asking (id, first_heard, last_heard) VALUES (?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING", (machine, iso(at), iso(at)))
            return True

    def asking(self) -> list[tuple[str, str, str]]:
        """``(id, first heard, last heard)`` of the ids asking to join, latest first."""
        return [tuple(r) for r in self._x("SELECT id, first_heard, last_heard FROM asking"
                                          " ORDER BY last_heard DESC, id").fetchall()]

    # -- keeping --------------------------------------------------------------------------
    def forget_before(self, cutoff: datetime) -> int:
        """Drop raw events, finished alert deliveries and the hub's own catch-up questions
        (with their answers) from before ``cutoff``
        (``[database] keep_events_days``); usage buckets are kept for ever. Returns how many
        events went."""
        with self.transaction():
            gone = self._x("DELETE FROM events WHERE received < ?", (iso(cutoff),)).rowcount
            self._x("DELETE FROM deliveries WHERE done IS NOT NULL AND created < ?",
                    (iso(cutoff),))
            self._x('DELETE FROM commands WHERE "user" = ? AND sent < ?', (CATCH_UP, iso(cutoff)))
            self._x("DELETE FROM alert_log WHERE cleared < ?", (iso(cutoff),))
        return gone


class SqliteStore(HubStore):
    """The hub's SQLite file at ``path`` (WAL; more than one hub process may share it on one
    box, taking turns to write)."""

    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA busy_timeout = 30000")  # another hub process is writing
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a bucket is acknowledged to the broker once committed, so the commit must
        # outlive a power cut (NORMAL may lose the last commits in WAL mode)
        self.db.execute("PRAGMA synchronous=FULL")
        self._lease: int | None = None
        if self.path == ":memory:":
            self._migrate()
            return
        # sqlite-utils commits as it goes, so two hub processes starting on a new file take
        # turns by a lock on a file of their own. Never the database file itself: closing any
        # descriptor of it lets go of every fcntl lock this process holds on it, SQLite's
        # included, and the next connection to close elsewhere then deletes the WAL that
        # this one is still writing
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._migrate()
        finally:
            os.close(fd)

    def close(self) -> None:
        with self.lock:
            self.db.close()
            if self._lease is not None:
                os.close(self._lease)
                self._lease = None

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer nspvend hub (schema "
                             f"{version}); install it or move the file aside")
        for step in range(version, SCHEMA_VERSION):
            MIGRATIONS[step](self.db)
            self.db.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _x(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.db.execute(sql, params)

    def unavailable(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError)  # locked, disk full, I/O error

    def lead(self) -> bool:
        if self._lease is None:
            fd = os.open(self.path + ".lease", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._lease = fd
        return True

    def backup(self, destination: str) -> None:
        """A consistent copy of the file at ``destination`` while the hub runs (SQLite's
        online backup API)."""
        target = sqlite3.connect(destination)
        try:
            with self.lock:
                self.db.conn.backup(target)
        finally:
            target.close()


class PgStore(HubStore):
    """The hub's tables in PostgreSQL at ``url`` (psycopg 3): the store for a fleet past one
    box, shared by several hub processes. The alerts' lease is an advisory lock held by one
    process's own connection: PostgreSQL lets it go when that process dies."""

    kind = "postgresql"
    _order = "seq"

    def __init__(self, url: str, password: str | None = None) -> None:
        super().__init__()
        import psycopg

        self._psycopg = psycopg
        self.url, self._password = url, password
        self._depth = 0  # transactions open (see _reconnect_if_lost)
        self.conn = self._connect()
        self._lease: Any = None
        self._lease_lock = threading.Lock()
        self._leading = False
        with self.transaction():
            self._migrate()

    def _connect(self) -> Any:
        kwargs = {"password": self._password} if self._password else {}
        # keepalives both ways: a hub whose box or network dies is noticed within a minute
        # or two, and its lease (below) let go, not after TCP's two hours
        return self._psycopg.connect(
            self.url, autocommit=True, connect_timeout=10, application_name="nspvend-hub",
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
            tcp_user_timeout=60000,
            options="-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
                    "-c tcp_keepalives_count=3", **kwargs)

    def close(self) -> None:
        with self.lock:
            self.conn.close()
        with self._lease_lock:
            if self._lease is not None:
                self._lease.close()
                self._lease = None
            self._leading = False

    def _migrate(self) -> None:
        # one process migrates at a time; the others then find the work done
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEADER_KEY + 1,))
        self.conn.execute("CREATE TABLE IF NOT EXISTS nspvend_schema (version INTEGER NOT NULL)")
        row = self.conn.execute("SELECT version FROM nspvend_schema").fetchone()
        if row is None:
            self.conn.execute("INSERT INTO nspvend_schema VALUES (0)")
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"the database was written by a newer nspvend hub (schema "
                             f"{version}); install it")
        for step in range(version, SCHEMA_VERSION):
            for statement in PG_MIGRATIONS[step]:
                self.conn.execute(statement)
            self.conn.execute("UPDATE nspvend_schema SET version = %s", (step + 1,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            self._reconnect_if_lost()
            self._depth += 1
            try:
                with self.conn.transaction():
                    yield
            finally:
                self._depth -= 1

    def _reconnect_if_lost(self) -> None:
        """A new connection for one that was lost, never inside a transaction (the rest of it
        would then be committed a statement at a time)."""
        if self._depth == 0 and (self.conn.closed or self.conn.broken):
            log.warning("the database connection was lost; connecting again")
            self.conn = self._connect()

    def _x(self, sql: str, params: tuple | list = ()) -> Any:
        with self.lock:
            self._reconnect_if_lost()  # a page read after the server restarted
            return self.conn.execute(_pg(sql), params)

    def unavailable(self, error: BaseException) -> bool:
        # OperationalError: the connection, a deadlock or serialization failure, a shutdown
        return isinstance(error, (self._psycopg.OperationalError, self._psycopg.InterfaceError))

    def lead(self) -> bool:
        """The lease is an advisory lock held by a connection of its own, kept open (and
        guarded by its own lock, so that asking never holds up the listener or the pages)."""
        with self._lease_lock:
            try:
                if self._lease is None or self._lease.closed or self._lease.broken:
                    if self._leading:
                        log.warning("lost the alerts' lease with the database connection")
                    self._leading = False
                    if self._lease is not None:
                        self._lease.close()
                    self._lease = self._connect()
                if self._leading:
                    self._lease.execute("SELECT 1")  # still connected: still ours
                else:
                    self._leading = bool(self._lease.execute(
                        "SELECT pg_try_advisory_lock(%s)", (LEADER_KEY,)).fetchone()[0])
            except self._psycopg.Error as e:
                if self._leading:
                    log.warning("lost the alerts' lease with the database connection")
                else:
                    log.warning("cannot reach the database for the alerts' lease: %s",
                                first_line(e))
                self._leading = False
                if self._lease is not None:
                    self._lease.close()
                    self._lease = None
            return self._leading

    def backup(self, destination: str) -> None:
        raise StoreError("the hub's store is PostgreSQL: back it up with pg_dump "
                         "(see the README), not nspvend hub backup")


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


class StoreError(Exception):
    """The store cannot be opened or used as asked (one line for a person)."""


def _chunks(rows: list, size: int) -> Iterator[list]:
    """``rows`` a ``size`` at a time (a statement's parameters are limited)."""
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _days_covered(start: str, end: str) -> Iterator[tuple[str, float, int]]:
    """``(UTC day, seconds of [start, end) in it, 1 for the day the bucket starts in)``: a
    bucket across midnight covers its share of the next day too (buckets last at most a
    day; three days at most are looked at)."""
    a, b = parse_iso(start), parse_iso(end)
    day_start = datetime(a.year, a.month, a.day, tzinfo=UTC)
    for n in range(3):
        midnight = day_start + timedelta(days=1)
        yield (f"{day_start:%Y-%m-%d}",
               max(0.0, (min(b, midnight) - max(a, day_start)).total_seconds()), int(n == 0))
        if b <= midnight:
            break
        day_start = midnight


def _split(start: str, end: str) -> tuple[tuple[str, str] | None, list[tuple[str, str]],
                                         list[tuple[str, str]]]:
    """[start, end) as the whole UTC months inside it (first month, the month after the last),
    the whole UTC days left at either side of them (first day, day after the last), and the
    instants left at either edge."""
    a, b = parse_iso(start), parse_iso(end)
    first = datetime(a.year, a.month, a.day, tzinfo=UTC)
    if first < a:
        first += timedelta(days=1)
    last = datetime(b.year, b.month, b.day, tzinfo=UTC)
    if last <= first:
        return None, [], [(start, end)] if a < b else []
    edges = [(iso(x), iso(y)) for x, y in ((a, first), (last, b)) if x < y]
    month_in = first if first.day == 1 else _next_month(first)
    month_out = datetime(last.year, last.month, 1, tzinfo=UTC)
    if month_in >= month_out:
        return None, [(f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}")], edges
    days = [(f"{x:%Y-%m-%d}", f"{y:%Y-%m-%d}") for x, y in ((first, month_in),
                                                             (month_out, last)) if x < y]
    return (f"{month_in:%Y-%m}", f"{month_out:%Y-%m}"), days, edges


def _next_month(d: datetime) -> datetime:
    return datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)


@functools.cache
def _pg(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (no query here has a literal ``?``)."""
    return sql.replace("?", "%s")


def open_store(config: Any) -> HubStore:
    """The store ``config`` (a :class:`~hub.config.HubConfig`) names: PostgreSQL with
    ``database.url``, else the SQLite file at ``database.path``."""
    if config.database_url:
        password = None
        if config.database_password_file:
            with open(config.database_password_file) as f:
                password = f.readline().strip()
        return PgStore(config.database_url, password)
    return SqliteStore(config.database_path)


def _machine(row: tuple) -> Machine:
    state = StateMessage.read(row[5]) if row[5] else None
    stock = StockMessage.read(row[6]) if row[6] else None
    return Machine(row[0], row[1], row[2], row[3], row[4], state, stock, *row[7:12])


def _command(row: tuple) -> dict:
    keys = ("id", "machine", "user", "sent", "command", "answered", "ok", "answer")
    out = dict(zip(keys, row, strict=True))
    out["command"] = json.loads(out["command"])
    out["answer"] = json.loads(out["answer"]) if out["answer"] else None
    out["ok"] = None if out["ok"] is None else bool(out["ok"])
    return out

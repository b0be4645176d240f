"""The machine's memory in one SQLite file: slots, usage buckets, open vends, outbox, events.

Every change that must survive a power cut is one transaction here: a vend's
journal entry is committed (WAL, ``synchronous=FULL``) before its motor turns;
the drop, the stock decrement, the usage count and the outbox rows are one
commit. Nothing is written while the machine is idle except the closing of a
usage bucket. Schema changes are code: :data:`MIGRATIONS`, one step a version.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.clock import iso, parse_iso
from controller.messages import EventMessage, UsageMessage, compact

log = logging.getLogger(__name__)

EVENT_LOG_LIMIT = 500
OUTBOX_LIMIT = 5000
COMMAND_MEMORY_LIMIT = 100_000  # ids remembered until their expiry; far more is a flood
WAL_SIZE_LIMIT = 1024 * 1024
# Events a vend can cause: their times are rounded in the local log (schema 3 rounds old rows).
VEND_CAUSED = ("jam", "low_stock", "empty", "stock_mismatch", "unconfirmed_vend", "sensor_fault",
               "fault_cleared", "silence", "storage_fault")


@dataclass
class SlotState:
    """What the controller believes about one slot."""

    slot: int
    product: str
    count: int
    capacity: int
    low_at: int
    enabled: bool = True
    fault: str | None = None
    known_empty: bool = False
    """Counted empty and a turn dropped nothing: not turned again until it may hold packs."""
    expires: str | None = None
    """The month its packs expire at the end of (``2027-03``), as given at the last refill."""


@dataclass(frozen=True)
class Event:
    """Something staff at the hub should hear about."""

    type: str
    slot: int | None = None
    product: str | None = None
    detail: str | None = None
    count: int | None = None  # packs, where the event is about a number of them


@dataclass
class Bucket:
    """The usage bucket being counted into."""

    id: str
    start: datetime
    planned_end: datetime
    clock_synced: bool


@dataclass(frozen=True)
class OpenVend:
    """A vend whose motor may have turned and whose outcome is not yet counted. It keeps no
    time: which bucket it counts in is decided when it is settled."""

    seq: int
    slot: int
    product: str
    board: str | None


def _v1(db: Any) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db["slots"].create(
        {"slot": int, "product": str, "count": int, "capacity": int, "low_at": int,
         "enabled": int, "fault": str, "config_sig": str},
        pk="slot", not_null={"product", "count", "capacity", "low_at", "enabled"},
        if_not_exists=True,
    )
    db["buckets"].create(
        {"id": str, "start": str, "planned_end": str, "end": str, "clock_synced": int},
        pk="id", not_null={"start", "clock_synced"}, if_not_exists=True,
    )
    db["bucket_counts"].create(
        {"bucket_id": str, "product": str, "confirmed": int, "unconfirmed": int},
        pk=("bucket_id", "product"), foreign_keys=[("bucket_id", "buckets", "id")],
        if_not_exists=True,
    )
    db["journal"].create({"seq": int, "slot": int, "product": str, "started": str, "board": str},
                         pk="seq",
                         if_not_exists=True)
    db["outbox"].create(
        {"id": int, "kind": str, "message_id": str, "payload": str, "created": str}, pk="id",
        if_not_exists=True,
    )
    db["events"].create(
        {"id": str, "ts": str, "type": str, "slot": int, "product": str, "detail": str}, pk="id",
        if_not_exists=True,
    )
    db["commands"].create({"id": str, "ts": str, "result": str}, pk="id", if_not_exists=True)


def _v2(db: Any) -> None:
    if "known_empty" not in db["slots"].columns_dict:
        db["slots"].add_column("known_empty", int, not_null_default=0)


def _v3(db: Any) -> None:
    """Promise 2: no row keeps the time of a vend. The journal and the outbox lose their
    time columns; events a vend caused are rounded to the hour; a command is remembered
    until its expiry; events a vend caused wait in ``held_events`` (no time) until their
    bucket closes (the ``hold`` column is no longer used)."""
    if "started" in db["journal"].columns_dict:
        db["journal"].transform(drop={"started"})
    if "created" in db["outbox"].columns_dict:
        db["outbox"].transform(drop={"created"})
    if "forget_after" not in db["commands"].columns_dict:
        db["commands"].add_column("forget_after", str)
        db.execute("UPDATE commands SET forget_after = ts")
    db["held_events"].create({"id": int, "hold": str, "payload": str}, pk="id",
                             not_null={"hold", "payload"}, if_not_exists=True)
    db.execute("UPDATE events SET ts = substr(ts, 1, 14) || '00:00Z' WHERE type IN ("
               + ",".join("?" * len(VEND_CAUSED)) + ")", VEND_CAUSED)


def _v4(db: Any) -> None:
    """A slot's packs carry the month they expire at the end of (given at refill)."""
    if "expires" not in db["slots"].columns_dict:
        db["slots"].add_column("expires", str)


# each step is given the file as a sqlite_utils.Database
MIGRATIONS: list[Callable[[Any], None]] = [_v1, _v2, _v3, _v4]
SCHEMA_VERSION = len(MIGRATIONS)


class StorageError(Exception):
    """The SQLite file cannot be written (disk full, card failing, read-only)."""


class Ledger:
    """All persistent state of one machine, in the SQLite file at ``path``."""

    def __init__(self, path: str | Path, machine_id: str) -> None:
        self.path = str(path)
        self.machine_id = machine_id
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db: Any = None
        self.conn.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self._migrate()

    @property
    def db(self) -> Any:
        """The file through sqlite-utils (a ``sqlite_utils.Database`` on the same connection),
        for schema changes and salvage: imported only then, since it brings click, dateutil
        and pluggy with it (some 15 MB a machine has no use for while it vends)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def close(self) -> None:
        self.conn.close()

    def check(self) -> None:
        """Raise :class:`sqlite3.DatabaseError` unless every page of the file reads
        (``PRAGMA quick_check``: milliseconds for a machine's few megabytes)."""
        problems = [r[0] for r in self._x("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems)[:300])

    def truncate_wal(self) -> None:
        """Copy the WAL into the database and cut it to nothing, so the page images it held
        (the order of the vends since the last time) are gone from the file."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            log.debug("WAL checkpoint failed: %s", e)

    # -- plumbing --------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable commit; raises :class:`StorageError` if it cannot be written."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StorageError(str(e)) from e
        try:
            yield
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise StorageError(str(e)) from e
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} was written by a newer nspvend (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); install the newer version or move the file aside")
        for step in range(version, SCHEMA_VERSION):
            # sqlite-utils commits each schema change itself, so every step is written to
            # be re-run safely if a power cut stops it half-way.
            MIGRATIONS[step](self.db)
            self.conn.execute(f"PRAGMA user_version = {step + 1}")
            log.info("database %s migrated to schema %d", self.path, step + 1)

    def _x(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def salvage(self, old: str) -> dict[str, int]:
        """Copy into this (new, empty) ledger every row of ``old`` that still reads, table by
        table (columns both know); returns the rows copied per table."""
        copied: dict[str, int] = {}
        try:
            source = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
        except sqlite3.Error:
            return copied
        self._x("PRAGMA foreign_keys=OFF")  # a bucket's counts may outlive its row
        try:
            for table in SALVAGE:
                try:
                    theirs = {r[1] for r in source.execute(f"PRAGMA table_info({table})")}
                    columns = [c for c in self.db[table].columns_dict if c in theirs]
                    if not columns:
                        continue
                    names = ", ".join(f'"{c}"' for c in columns)
                    rows = source.execute(f"SELECT {names} FROM {table}").fetchall()
                    with self.transaction():
                        self.conn.executemany(f"INSERT OR IGNORE INTO {table} ({names})"
                                                 f" VALUES ({', '.join('?' * len(columns))})",
                                                 rows)
                    copied[table] = len(rows)
                except (sqlite3.Error, StorageError) as e:
                    log.warning("could not read back %s from %s: %s", table, old, e)
        finally:
            source.close()
            self._x("PRAGMA foreign_keys=ON")
        return copied

    # -- meta ------------------------------------------------------------------
    def meta(self, key: str, default: Any = None) -> Any:
        row = self._x("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        """Write one meta value (inside the caller's transaction)."""
        self._x("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def raise_last_seq(self, seq: int) -> None:
        """Record that vend request ``seq`` was used (never lowers it; in the caller's
        transaction). Sequence numbers must never be used twice: the board answers a
        number it remembers with that vend's outcome, without turning."""
        if seq > int(self.meta("last_seq", 0)):
            self.set_meta("last_seq", seq)

    # -- slots -----------------------------------------------------------------
    def slots(self) -> dict[int, SlotState]:
        rows = self._x(
            "SELECT slot, product, count, capacity, low_at, enabled, fault, known_empty, expires"
            " FROM slots ORDER BY slot"
        ).fetchall()
        return {
            r[0]: SlotState(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], bool(r[7]), r[8])
            for r in rows
        }

    def config_signatures(self) -> dict[int, str | None]:
        return dict(self._x("SELECT slot, config_sig FROM slots").fetchall())

    def save_slot(self, s: SlotState, config_sig: str | None = None) -> None:
        """Write one slot (inside the caller's transaction)."""
        self._x(
            "INSERT INTO slots (slot, product, count, capacity, low_at, enabled, fault, known_empty,"
            " expires, config_sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(slot) DO"
            " UPDATE SET product=excluded.product, count=excluded.count,"
            " capacity=excluded.capacity, low_at=excluded.low_at, enabled=excluded.enabled,"
            " fault=excluded.fault, known_empty=excluded.known_empty, expires=excluded.expires,"
            " config_sig=coalesce(excluded.config_sig, slots.config_sig)",
            (s.slot, s.product, s.count, s.capacity, s.low_at, int(s.enabled), s.fault,
             int(s.known_empty), s.expires, config_sig),
        )

    def delete_slot(self, slot: int) -> None:
        self._x("DELETE FROM slots WHERE slot = ?", (slot,))

    # -- vend journal ----------------------------------------------------------
    def open_vend(self, seq: int, slot: int, product: str, board: str | None = None) -> None:
        """Persist vend request ``seq`` durably, before its motor turns; ``board`` is the
        hardware's boot id as last known, so a recall can tell "never got it" from "forgot"."""
        with self.transaction():
            self.raise_last_seq(seq)
            self._x("INSERT INTO journal (seq, slot, product, board) VALUES (?, ?, ?, ?)",
                    (seq, slot, product, board))

    def open_vends(self) -> list[OpenVend]:
        rows = self._x("SELECT seq, slot, product, board FROM journal ORDER BY seq").fetchall()
        return [OpenVend(*r) for r in rows]

    def close_vend(self, seq: int) -> None:
        """Forget a journal entry (inside the caller's transaction)."""
        self._x("DELETE FROM journal WHERE seq = ?", (seq,))

    # -- usage -----------------------------------------------------------------
    def open_bucket(self) -> Bucket | None:
        row = self._x(
            "SELECT id, start, planned_end, clock_synced FROM buckets WHERE end IS NULL"
        ).fetchone()
        if not row:
            return None
        return Bucket(row[0], parse_iso(row[1]), parse_iso(row[2]), bool(row[3]))

    def start_bucket(self, bucket: Bucket) -> None:
        """Record a newly opened bucket (inside the caller's transaction)."""
        self._x(
            "INSERT INTO buckets (id, start, planned_end, end, clock_synced) VALUES (?, ?, ?, NULL, ?)",
            (bucket.id, iso(bucket.start), iso(bucket.planned_end), int(bucket.clock_synced)),
        )

    def count(self, bucket: Bucket, product: str, confirmed: bool) -> None:
        """Add one pack to ``bucket`` (inside the caller's transaction)."""
        column = "confirmed" if confirmed else "unconfirmed"
        self._x(
            "INSERT INTO bucket_counts (bucket_id, product, confirmed, unconfirmed)"
            " VALUES (?, ?, 0, 0) ON CONFLICT DO NOTHING",
            (bucket.id, product),
        )
        self._x(
            f"UPDATE bucket_counts SET {column} = {column} + 1 WHERE bucket_id = ? AND product = ?",
            (bucket.id, product),
        )

    def finish_bucket(self, bucket: Bucket, end: datetime, products: list[str]) -> dict:
        """Close ``bucket`` at ``end`` and queue its usage message (inside a transaction)."""
        self._x("UPDATE buckets SET end = ? WHERE id = ?", (iso(end), bucket.id))
        rows = self._x(
            "SELECT product, confirmed, unconfirmed FROM bucket_counts WHERE bucket_id = ?",
            (bucket.id,),
        ).fetchall()
        counts = dict.fromkeys(products, 0)
        unconfirmed = dict.fromkeys(products, 0)
        for product, c, u in rows:
            counts[product] = counts.get(product, 0) + c
            unconfirmed[product] = unconfirmed.get(product, 0) + u
        payload = UsageMessage(id=bucket.id, start=iso(bucket.start), end=iso(end), counts=counts,
                               unconfirmed=unconfirmed, clock_synced=bucket.clock_synced).payload()
        self.enqueue("usage", bucket.id, payload)
        return payload

    def usage(self, since: str | None = None, until: str | None = None,
              closed_only: bool = False) -> list[dict]:
        """Usage per bucket and product, oldest first; the open bucket has ``end`` None
        (left out with ``closed_only``: its counts would time the vends in it)."""
        where, params = ["b.end IS NOT NULL"] if closed_only else [], []
        if since:
            where.append("b.start >= ?")
            params.append(since)
        if until:
            where.append("b.start < ?")
            params.append(until)
        sql = (
            "SELECT b.id, b.start, b.end, b.clock_synced, c.product, c.confirmed, c.unconfirmed"
            " FROM buckets b LEFT JOIN bucket_counts c ON c.bucket_id = b.id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY b.start, b.rowid, c.product"
        )
        buckets: dict[str, dict] = {}
        for bid, start, end, synced, product, c, u in self._x(sql, tuple(params)).fetchall():
            b = buckets.setdefault(bid, {"id": bid, "start": start, "end": end,
                                         "clock_synced": bool(synced), "counts": {},
                                         "unconfirmed": {}})
            if product is not None:
                b["counts"][product] = c
                b["unconfirmed"][product] = u
        return list(buckets.values())

    def totals(self, closed_only: bool = False) -> dict[str, dict[str, int]]:
        """All-time confirmed and unconfirmed packs per product (in closed buckets only,
        with ``closed_only``)."""
        rows = self._x(
            "SELECT product, sum(confirmed), sum(unconfirmed) FROM bucket_counts"
            + (" WHERE bucket_id IN (SELECT id FROM buckets WHERE end IS NOT NULL)"
               if closed_only else "") + " GROUP BY product"
        ).fetchall()
        return {p: {"confirmed": c, "unconfirmed": u} for p, c, u in rows}

    def quiet_seconds(self) -> float:
        """How long the latest closed buckets, back to the last one with a pack, ran."""
        quiet = 0.0
        rows = self._x(
            "SELECT b.start, b.end, coalesce(sum(c.confirmed + c.unconfirmed), 0) FROM buckets b"
            " LEFT JOIN bucket_counts c ON c.bucket_id = b.id WHERE b.end IS NOT NULL"
            " GROUP BY b.id ORDER BY b.start DESC, b.rowid DESC LIMIT 10000").fetchall()
        for start, end, packs in rows:
            if packs:
                break
            quiet += max(0.0, (parse_iso(end) - parse_iso(start)).total_seconds())
        return quiet

    # -- outbox and events -----------------------------------------------------
    def enqueue(self, kind: str, message_id: str, payload: dict) -> None:
        """Queue a message for the hub (inside the caller's transaction).

        The outbox is bounded: past :data:`OUTBOX_LIMIT` rows the oldest *events* go
        first; usage is never dropped (it is few rows: one per bucket).
        """
        self._x(
            "INSERT INTO outbox (kind, message_id, payload) VALUES (?, ?, ?)",
            (kind, message_id, compact(payload)),
        )
        if kind == "event":
            excess = self.outbox_size() - OUTBOX_LIMIT
            if excess > 0:
                self._x("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE kind ="
                        " 'event' ORDER BY id LIMIT ?)", (excess,))

    def delete_outbox(self, *rows: int) -> None:
        """The broker has these messages: forget them (inside the caller's transaction)."""
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            self._x(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def outbox(self, limit: int = 100) -> list[tuple[int, str, str]]:
        """Queued messages, oldest first: ``(row id, kind, payload)``."""
        return self._x(
            "SELECT id, kind, payload FROM outbox ORDER BY id LIMIT ?", (limit,)
        ).fetchall()

    def outbox_size(self) -> int:
        return self._x("SELECT count(*) FROM outbox").fetchone()[0]

    def add_event(self, event: Event, now: datetime, event_id: str | None = None) -> dict:
        """Log ``event`` at ``now`` and queue it for the hub (inside the caller's transaction)."""
        payload = EventMessage(id=event_id or uuid.uuid4().hex, ts=iso(now), type=event.type,
                               slot=event.slot, product=event.product,
                               detail=event.detail, count=event.count).payload()
        self._log_and_queue(payload)
        return payload

    def _log_and_queue(self, payload: dict) -> None:
        self._x(
            "INSERT INTO events (id, ts, type, slot, product, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (payload["id"], payload["ts"], payload["type"], payload.get("slot"),
             payload.get("product"), payload.get("detail")),
        )
        self._x(
            "DELETE FROM events WHERE rowid <= (SELECT max(rowid) FROM events) - ?",
            (EVENT_LOG_LIMIT,),
        )
        self.enqueue("event", payload["id"], payload)

    # -- events held until their bucket closes (promise 2) -------------------------
    def hold_event(self, event: Event) -> None:
        """Keep ``event``, caused by a vend, unsent and with no time until
        :meth:`release_held` (inside the caller's transaction)."""
        held = {"id": uuid.uuid4().hex, "type": event.type, "slot": event.slot,
                "product": event.product, "detail": event.detail, "count": event.count}
        self._x("INSERT INTO held_events (hold, payload) VALUES ('', ?)", (compact(held),))

    def held_events(self) -> list[Event]:
        """The events held now, in the order they happened."""
        return [event for _, event in self._held()]

    def release_held(self, ts: datetime) -> int:
        """Log and queue every held event, in order, stamped ``ts`` (the end of the bucket
        closing; inside the caller's transaction)."""
        held = self._held()
        for event_id, event in held:
            self.add_event(event, ts, event_id)
        self._x("DELETE FROM held_events")
        return len(held)

    def _held(self) -> list[tuple[str, Event]]:
        out = []
        for (text,) in self._x("SELECT payload FROM held_events ORDER BY id").fetchall():
            held = json.loads(text)
            out.append((held["id"], Event(**{k: v for k, v in held.items() if k in _EVENT_FIELDS})))
        return out

    def events(self, limit: int = 20) -> list[dict]:
        rows = self._x(
            "SELECT id, ts, type, slot, product, detail FROM events ORDER BY rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("id", "ts", "type", "slot", "product", "detail")
        return [{k: v for k, v in zip(keys, r, strict=True) if v is not None} for r in rows]

    # -- command ids -----------------------------------------------------------
    def command_result(self, command_id: str) -> dict | None:
        row = self._x("SELECT result FROM commands WHERE id = ?", (command_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def remember_command(self, command_id: str, result: dict, forget_after: datetime) -> None:
        """Keep a command's result so a replay answers the same, until ``forget_after``
        (its expiry) has passed (inside a transaction). When it came is not kept."""
        self._x("INSERT OR REPLACE INTO commands (id, ts, result, forget_after) VALUES"
                " (?, NULL, ?, ?)", (command_id, compact(result), iso(forget_after)))

    def forget_commands(self, now: datetime) -> None:
        """Forget the commands whose expiry has passed (inside a transaction): a replay of
        one of them is refused as expired, so none can run twice."""
        self._x("DELETE FROM commands WHERE forget_after < ?", (iso(now),))

    def commands_remembered(self) -> int:
        return self._x("SELECT count(*) FROM commands").fetchone()[0]


_EVENT_FIELDS = ("type", "slot", "product", "detail", "count")


SALVAGE = ("meta", "slots", "journal", "buckets", "bucket_counts", "outbox", "held_events",
           "events", "commands")


def open_ledger(path: str, machine_id: str, now: datetime) -> tuple[Ledger, str | None]:
    """The ledger at ``path`` and None; or, when that file cannot be used (not a database,
    damaged pages, a schema from a newer nspvend), a fresh ledger and a sentence saying
    what happened.

    Access first: a machine whose card holds a broken file must still vend. The file is
    not deleted: it is moved aside (with its WAL), named with the date, and whatever of it
    can still be read, table by table (the outbox first of all: counts not yet sent), is
    copied into the fresh one. If not even a fresh file can be made, the ledger lives in
    memory until the daemon stops.
    """
    try:
        ledger = Ledger(path, machine_id)
    except (sqlite3.DatabaseError, StorageError) as e:
        problem = str(e)
    else:
        try:
            ledger.check()
            return ledger, None
        except sqlite3.DatabaseError as e:
            problem = str(e)
            ledger.close()
    aside = f"{path}.bad-{now:%Y%m%dT%H%M%SZ}"
    try:
        for suffix in ("-wal", "-shm", ""):
            if Path(path + suffix).exists():
                Path(path + suffix).rename(aside + suffix)
        fresh = Ledger(path, machine_id)
    except (OSError, sqlite3.DatabaseError, StorageError) as e:
        return Ledger(":memory:", machine_id), (
            f"{path} cannot be used ({problem}) and no new database can be made there ({e}); "
            "counting in memory until the daemon stops: free or replace the card")
    salvaged = fresh.salvage(aside)
    kept = ", ".join(f"{table} {n}" for table, n in salvaged.items() if n) or "nothing"
    return fresh, (f"{path} could not be used ({problem}); kept as {aside}, started a new one "
                   f"(read back from the old: {kept}); recount the slots at the machine")


def new_bucket_id() -> str:
    """A bucket id that stays unique even if the database is ever replaced."""
    return uuid.uuid4().hex

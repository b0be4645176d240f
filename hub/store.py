"""What the hub keeps, in its own SQLite file (sqlite-utils): machines, usage, events, commands,
users, sessions and alerts.

Exactly once: a usage bucket is keyed on its ``id`` (a bucket heard twice counts once), an
event on its ``id``. Confirmed and unconfirmed counts stay apart. One connection, used
under a lock by the listener, the web pages and the alerts. Schema changes are code
(:data:`MIGRATIONS`), one step a version, as on the machine.
"""

from __future__ import annotations

import json
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
    CommandResult,
    EventMessage,
    StateMessage,
    StockMessage,
    UsageMessage,
    compact,
)


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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


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


class HubStore:
    """The hub's SQLite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.lock = threading.RLock()
        self._migrate()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer nspvend hub (schema "
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

    # -- what machines say ---------------------------------------------------------------
    def heard(self, machine: str, at: datetime) -> None:
        """Any message from ``machine`` (inside a transaction)."""
        self._x("INSERT INTO machines (id, first_heard, last_heard) VALUES (?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET last_heard = excluded.last_heard",
                (machine, iso(at), iso(at)))

    def record_availability(self, machine: str, value: str, at: datetime) -> None:
        self._x("UPDATE machines SET availability_since = CASE WHEN availability IS ? THEN"
                " availability_since ELSE ? END, availability = ? WHERE id = ?",
                (value, iso(at), value, machine))

    def record_state(self, machine: str, state: StateMessage, at: datetime) -> None:
        self._x("UPDATE machines SET state = ?, state_at = ? WHERE id = ?",
                (state.encode(), iso(at), machine))

    def record_stock(self, machine: str, stock: StockMessage, at: datetime) -> None:
        self._x("UPDATE machines SET stock = ?, stock_at = ? WHERE id = ?",
                (stock.encode(), iso(at), machine))

    def record_usage(self, machine: str, usage: UsageMessage, at: datetime) -> bool:
        """Keep a bucket once: True if it was new, False if heard before (not counted again)."""
        cursor = self._x("INSERT OR IGNORE INTO buckets (id, machine, start, end, clock_synced,"
                         " received) VALUES (?, ?, ?, ?, ?, ?)",
                         (usage.id, machine, usage.start, usage.end, int(usage.clock_synced),
                          iso(at)))
        if cursor.rowcount == 0:
            return False
        if any(usage.counts.values()) or any(usage.unconfirmed.values()):
            self._x("UPDATE machines SET last_pack = ? WHERE id = ? AND (last_pack IS NULL OR"
                    " last_pack < ?)", (usage.end, machine, usage.end))
        day = usage.start[:10]
        for product in sorted(set(usage.counts) | set(usage.unconfirmed)):
            confirmed, unconfirmed = usage.counts.get(product, 0), usage.unconfirmed.get(product, 0)
            self._x("INSERT INTO bucket_counts (bucket_id, product, confirmed, unconfirmed)"
                    " VALUES (?, ?, ?, ?)", (usage.id, product, confirmed, unconfirmed))
            self._x("INSERT INTO daily_counts (machine, day, product, confirmed, unconfirmed)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (machine, day, product) DO UPDATE SET"
                    " confirmed = confirmed + excluded.confirmed,"
                    " unconfirmed = unconfirmed + excluded.unconfirmed",
                    (machine, day, product, confirmed, unconfirmed))
        start, end = parse_iso(usage.start), parse_iso(usage.end)
        midnight = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
        seconds = max(0.0, (min(end, midnight) - start).total_seconds())
        self._x("INSERT INTO daily_cover (machine, day, seconds, buckets) VALUES (?, ?, ?, 1)"
                " ON CONFLICT (machine, day) DO UPDATE SET seconds = seconds + excluded.seconds,"
                " buckets = buckets + 1", (machine, day, seconds))
        return True

    def record_event(self, machine: str, event: EventMessage, at: datetime) -> bool:
        cursor = self._x("INSERT OR IGNORE INTO events (id, machine, ts, type, slot, product,"
                         " detail, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (event.id, machine, event.ts, event.type, event.slot, event.product,
                          event.detail, iso(at)))
        return cursor.rowcount == 1

    def record_result(self, machine: str, result: CommandResult, at: datetime) -> None:
        """A machine's answer to a command the hub sent (others' answers are ignored)."""
        self._x("UPDATE commands SET answered = ?, ok = ?, answer = ? WHERE id = ? AND machine = ?"
                " AND answered IS NULL",
                (iso(at), int(result.ok), compact(result.payload()), result.id, machine))

    # -- reading it back -----------------------------------------------------------------
    def machines(self) -> list[Machine]:
        rows = self._x("SELECT id, first_heard, last_heard, availability, availability_since,"
                       " state, stock FROM machines ORDER BY id").fetchall()
        return [_machine(row) for row in rows]

    def machine(self, machine_id: str) -> Machine | None:
        row = self._x("SELECT id, first_heard, last_heard, availability, availability_since,"
                      " state, stock FROM machines WHERE id = ?", (machine_id,)).fetchone()
        return _machine(row) if row else None

    def events(self, machine: str | None = None, limit: int = 50) -> list[dict]:
        where, params = ("WHERE machine = ?", [machine]) if machine else ("", [])
        rows = self._x(f"SELECT id, machine, ts, type, slot, product, detail FROM events {where}"
                       " ORDER BY ts DESC, received DESC LIMIT ?", [*params, limit]).fetchall()
        keys = ("id", "machine", "ts", "type", "slot", "product", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def usage_by_day(self, start: str, end: str, machines: list[str] | None = None
                     ) -> list[tuple[str, str, str, int, int]]:
        """``(machine, day, product, confirmed, unconfirmed)`` summed per UTC day, for buckets
        that start in [start, end) (the database adds up, not Python)."""
        sql = ("SELECT machine, day, product, confirmed, unconfirmed FROM daily_counts"
               " WHERE day >= ? AND day < ?")
        params: list[Any] = [start[:10], end[:10]]
        if machines is not None:
            sql += f" AND machine IN ({','.join('?' * len(machines))})"
            params += machines
        return self._x(sql, params).fetchall()

    def covered_by_day(self, start: str, end: str) -> list[tuple[str, str, float]]:
        """``(machine, day, seconds)``: how long the buckets that start on each UTC day ran
        (a bucket reaching past midnight counts up to midnight)."""
        return self._x("SELECT machine, day, seconds FROM daily_cover WHERE day >= ? AND day < ?",
                       (start[:10], end[:10])).fetchall()

    def usage_totals(self, start: str, end: str) -> list[tuple[str, str, int, int, int]]:
        """``(machine, product, confirmed, unconfirmed, buckets)`` for buckets starting in
        [start, end)."""
        return self._x(
            "SELECT d.machine, d.product, sum(d.confirmed), sum(d.unconfirmed), (SELECT"
            " sum(buckets) FROM daily_cover c WHERE c.machine = d.machine AND c.day >= ? AND"
            " c.day < ?) FROM daily_counts d WHERE d.day >= ? AND d.day < ?"
            " GROUP BY d.machine, d.product ORDER BY d.machine, d.product",
            (start[:10], end[:10], start[:10], end[:10])).fetchall()

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
        hours = self._x("SELECT coalesce(sum((julianday(end) - julianday(start)) * 24), 0)"
                        " FROM buckets WHERE machine = ? AND start >= ?",
                        (machine, since)).fetchone()[0]
        return {product: (packs, hours) for product, packs in rows}

    # -- commands ------------------------------------------------------------------------
    def record_command(self, command_id: str, machine: str, user: str, command: dict,
                       at: datetime) -> None:
        self._x("INSERT INTO commands (id, machine, user, sent, command) VALUES (?, ?, ?, ?, ?)",
                (command_id, machine, user, iso(at), compact(command)))

    def command(self, command_id: str) -> dict | None:
        row = self._x("SELECT id, machine, user, sent, command, answered, ok, answer FROM commands"
                      " WHERE id = ?", (command_id,)).fetchone()
        return _command(row) if row else None

    def commands(self, machine: str, limit: int = 30) -> list[dict]:
        rows = self._x("SELECT id, machine, user, sent, command, answered, ok, answer FROM commands"
                       " WHERE machine = ? ORDER BY sent DESC, rowid DESC LIMIT ?",
                       (machine, limit)).fetchall()
        return [_command(r) for r in rows]

    # -- users and sessions --------------------------------------------------------------
    def set_user(self, name: str, role: str, password_hash: str, at: datetime) -> None:
        self._x("INSERT INTO users (name, role, hash, created) VALUES (?, ?, ?, ?) ON CONFLICT"
                "(name) DO UPDATE SET role = excluded.role, hash = excluded.hash",
                (name, role, password_hash, iso(at)))

    def remove_user(self, name: str) -> bool:
        with self.transaction():
            self._x("DELETE FROM sessions WHERE user = ?", (name,))
            return self._x("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def user(self, name: str) -> tuple[str, str] | None:
        """``(role, hash)`` of user ``name``."""
        row = self._x("SELECT role, hash FROM users WHERE name = ?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def users(self) -> list[tuple[str, str, str]]:
        return self._x("SELECT name, role, created FROM users ORDER BY name").fetchall()

    def new_session(self, token: str, user: str, csrf: str, at: datetime) -> None:
        self._x("INSERT INTO sessions (token, user, csrf, created, seen) VALUES (?, ?, ?, ?, ?)",
                (token, user, csrf, iso(at), iso(at)))

    def session(self, token: str) -> tuple[str, str, str, str] | None:
        """``(user, role, csrf, created)`` of a session whose user still exists."""
        return self._x("SELECT s.user, u.role, s.csrf, s.created FROM sessions s JOIN users u ON"
                       " u.name = s.user WHERE s.token = ?", (token,)).fetchone()

    def end_session(self, token: str) -> None:
        self._x("DELETE FROM sessions WHERE token = ?", (token,))

    def end_sessions_before(self, created: datetime) -> None:
        self._x("DELETE FROM sessions WHERE created < ?", (iso(created),))

    def login_failures(self, who: str) -> tuple[int, str | None]:
        row = self._x("SELECT failures, last FROM login_failures WHERE who = ?", (who,)).fetchone()
        return (row[0], row[1]) if row else (0, None)

    def login_failed(self, who: str, at: datetime) -> None:
        self._x("INSERT INTO login_failures (who, failures, last) VALUES (?, 1, ?) ON CONFLICT"
                "(who) DO UPDATE SET failures = failures + 1, last = excluded.last", (who, iso(at)))

    def login_succeeded(self, who: str) -> None:
        self._x("DELETE FROM login_failures WHERE who = ?", (who,))

    # -- alerts --------------------------------------------------------------------------
    def raised_alerts(self) -> dict[tuple[str, str, str], dict]:
        rows = self._x("SELECT machine, type, subject, raised, detail, told FROM alerts"
                       " WHERE cleared IS NULL").fetchall()
        return {(m, t, s): {"raised": r, "detail": d, "told": told}
                for m, t, s, r, d, told in rows}

    def set_told(self, machine: str, kind: str, subject: str, routes: list[int]) -> None:
        """Which routes have heard this alert raised (so they, and only they, hear it end)."""
        self._x("UPDATE alerts SET told = ? WHERE machine = ? AND type = ? AND subject = ?",
                (json.dumps(routes), machine, kind, subject))

    def raise_alert(self, machine: str, kind: str, subject: str, detail: str,
                    at: datetime) -> None:
        self._x("INSERT INTO alerts (machine, type, subject, raised, cleared, detail, told) VALUES"
                " (?, ?, ?, ?, NULL, ?, '[]') ON CONFLICT(machine, type, subject) DO UPDATE SET"
                " raised = excluded.raised, cleared = NULL, detail = excluded.detail, told = '[]'",
                (machine, kind, subject, iso(at), detail))

    def clear_alert(self, machine: str, kind: str, subject: str, at: datetime) -> None:
        self._x("UPDATE alerts SET cleared = ? WHERE machine = ? AND type = ? AND subject = ?",
                (iso(at), machine, kind, subject))

    def queue_delivery(self, route: int, channel: str, target: str, body: dict,
                       at: datetime) -> None:
        self._x("INSERT INTO deliveries (route, channel, target, body, created, attempts,"
                " next_try) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (route, channel, target, json.dumps(body), iso(at), iso(at)))

    def due_deliveries(self, at: datetime, limit: int = 20) -> list[tuple[int, str, str, dict, int]]:
        rows = self._x("SELECT id, channel, target, body, attempts FROM deliveries WHERE done IS"
                       " NULL AND next_try <= ? ORDER BY id LIMIT ?", (iso(at), limit)).fetchall()
        return [(i, c, t, json.loads(b), a) for i, c, t, b, a in rows]

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

    def delivery_route(self, delivery: int) -> int:
        return self._x("SELECT route FROM deliveries WHERE id = ?", (delivery,)).fetchone()[0]

    def deliveries(self) -> list[dict]:
        keys = ("id", "route", "channel", "target", "body", "attempts", "done", "error")
        rows = self._x(f"SELECT {', '.join(keys)} FROM deliveries ORDER BY id").fetchall()
        return [{**dict(zip(keys, r, strict=True)), "body": json.loads(r[4])} for r in rows]


def _machine(row: tuple) -> Machine:
    state = StateMessage.read(row[5]) if row[5] else None
    stock = StockMessage.read(row[6]) if row[6] else None
    return Machine(row[0], row[1], row[2], row[3], row[4], state, stock)


def _command(row: tuple) -> dict:
    keys = ("id", "machine", "user", "sent", "command", "answered", "ok", "answer")
    out = dict(zip(keys, row, strict=True))
    out["command"] = json.loads(out["command"])
    out["answer"] = json.loads(out["answer"]) if out["answer"] else None
    out["ok"] = None if out["ok"] is None else bool(out["ok"])
    return out

"""Machines and their latest word: each machine heard (online or not, its state, stock and
silence), its events, and the machines staff enrolled or that ask to join."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.clock import iso
from controller.messages import (
    MAX_NAME,
    ONLINE,
    BadMessage,
    EventMessage,
    StateMessage,
    StockMessage,
)
from hub import rank
from hub.store.db import Db
from hub.store.schema import MACHINE_COLUMNS, RANK_COLUMNS

log = logging.getLogger("hub.store")

NAMES_READ_S = 60.0  # the products' names a process read are read again after this


def _shown(name: str | None) -> bool:
    """Whether a product's name from a machine's stock can name it on the pages: 1 to
    MAX_NAME printable characters, as the contract's ids and products are (no control
    characters, no lone surrogates a database refuses)."""
    return bool(name) and len(name) <= MAX_NAME and name.isprintable()


# a machine's latest state and stock, and the board's summary of each (hub.rank)
STATE_KINDS = (("state", "text"), ("state_at", "text"), ("state_rank", "int"), ("look", "text"),
               ("version", "text"), ("firmware", "text"), ("board_outdated", "int"))
STOCK_KINDS = (("stock", "text"), ("stock_at", "text"), ("stock_rank", "int"),
               ("use_by", "text"))
STATE_COLUMNS = tuple(name for name, _ in STATE_KINDS)
STOCK_COLUMNS = tuple(name for name, _ in STOCK_KINDS)
STATE_ROWS = (("id", "text"), *STATE_KINDS)
STOCK_ROWS = (("id", "text"), *STOCK_KINDS)
HEARD_ROWS = (("id", "text"), ("heard", "text"), *STATE_KINDS, *STOCK_KINDS)


def _newer(key: str, said: str) -> str:
    """The SQL of whether the ``key`` (``state`` or ``stock``) that row ``said`` gives is to be
    kept over the machine's: it gives one, told no earlier than the one kept (the times are
    :func:`~controller.clock.iso`'s, compared as text; a later one said in the same second
    stands). Several hub processes share the machines' words, so one can store a state
    after another process stored a later one (or hear it again, from a session it was
    away from): the latest told stands whatever order they are stored in."""
    return (f"{said}.{key} IS NOT NULL AND (machines.{key}_at IS NULL OR"
            f" {said}.{key}_at >= machines.{key}_at)")


def _latest(items: list[tuple[str, Any, datetime]]) -> dict[str, tuple[Any, datetime]]:
    """Each machine's latest told of ``items`` (``(machine, words, told at)``); of those told
    in the same second, the last."""
    latest: dict[str, tuple[Any, datetime]] = {}
    for machine, words, at in items:
        if machine not in latest or iso(at) >= iso(latest[machine][1]):
            latest[machine] = (words, at)
    return latest


def _state_columns(state: StateMessage, at: datetime) -> tuple:
    """A state's :data:`STATE_COLUMNS`, told at ``at``."""
    return (state.encode(), iso(at), *rank.of_state(state), *rank.versions_of(state))


def _stock_columns(stock: StockMessage, at: datetime) -> tuple:
    """A stock's :data:`STOCK_COLUMNS`, told at ``at``."""
    return (stock.encode(), iso(at), *rank.of_stock(stock))


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


@dataclass(frozen=True)
class Urgencies:
    """How urgent each machine is, by id (:meth:`Fleet.urgencies`), and the newest software
    and board firmware versions the machines say."""

    by_id: dict[str, int]
    newest: tuple[str | None, str | None]


class Fleet:
    """The machines (``store.fleet``)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self._names: dict[str, str] = {}  # the products' names as last read (record_stocks)
        self._names_read = -NAMES_READ_S

    def heard(self, machine: str, at: datetime) -> None:
        """Any message from ``machine`` (inside a transaction)."""
        self.heard_from([machine], at)

    def heard_from(self, machines: list[str], at: datetime) -> None:
        """Messages from each of ``machines`` (inside a transaction; :meth:`record_heard`)."""
        self.record_heard(machines, at)

    def record_heard(self, machines: list[str], at: datetime,
                     states: list[tuple[str, StateMessage, datetime]] = (),
                     stocks: list[tuple[str, StockMessage, datetime]] = ()) -> None:
        """A batch's messages from ``machines``, in one statement (inside a transaction):
        each heard at ``at``, with the latest told of ``states`` and ``stocks`` (``(machine,
        words, told at)``) as :meth:`record_states` and :meth:`record_stocks` keep them.

        One new version of each machine's row, not one for being heard and others for its
        state and stock (on PostgreSQL every write of a row is a new version of it, which
        the board reads past until it is cleared away), written in id order, so two
        processes' batches never wait for each other in a circle.

        A state or stock told before the one kept is not kept (:func:`_newer`): several hub
        processes share a machine's words, in no order between them."""
        width, split = len(HEARD_ROWS) - 2, len(STATE_KINDS)  # the state's columns, the stock's
        said: dict[str, list] = {m: [None] * width for m in machines}
        for machine, (state, told) in _latest(states).items():
            said.setdefault(machine, [None] * width)[:split] = _state_columns(state, told)
        for machine, (stock, told) in _latest(stocks).items():
            said.setdefault(machine, [None] * width)[split:] = _stock_columns(stock, told)
        rows = [(machine, iso(at), *columns) for machine, columns in sorted(said.items())]
        kept = ", ".join(f"{c} = CASE WHEN {_newer(key, 'excluded')} THEN excluded.{c} ELSE"
                         f" machines.{c} END" for key, names in (("state", STATE_COLUMNS),
                                                                  ("stock", STOCK_COLUMNS))
                         for c in names)
        names = ", ".join(name for name, _ in HEARD_ROWS[2:])
        for source, params in self.db.rows(HEARD_ROWS, rows):
            self.db.x(f"INSERT INTO machines (id, first_heard, last_heard, {names}) SELECT"
                      f" v.id, v.heard, v.heard, {names} FROM {source} WHERE true"
                      " ON CONFLICT (id) DO UPDATE SET last_heard = excluded.last_heard,"
                      f" {kept}", params)
        self._names_said([stock for stock, _ in _latest(stocks).values()])

    def record_availability(self, machine: str, value: str, at: datetime) -> None:
        self.db.x("UPDATE machines SET availability_since = CASE WHEN coalesce(availability, '')"
                " = ? THEN availability_since ELSE ? END, availability = ? WHERE id = ?",
                (value, iso(at), value, machine))

    def record_state(self, machine: str, state: StateMessage, at: datetime) -> None:
        """The machine's latest state, and the board's summary of it (:func:`hub.rank.of_state`)."""
        self.record_states([(machine, state, at)])

    def record_states(self, items: list[tuple[str, StateMessage, datetime]]) -> None:
        """Each ``(machine, state, told at)`` as the machine's latest state, with the board's
        summary of it (:func:`hub.rank.of_state`): where a machine says more than one, the
        latest told stands (of those told together, the last in ``items``), and none told
        before the one kept (:func:`_newer`). One statement for them all (inside a
        transaction)."""
        latest = _latest(items)
        rows = [(machine, *_state_columns(state, at))
                for machine, (state, at) in sorted(latest.items())]
        set_ = ", ".join(f"{c} = v.{c}" for c in STATE_COLUMNS)
        for source, params in self.db.rows(STATE_ROWS, rows):
            self.db.x(f"UPDATE machines SET {set_} FROM {source} WHERE machines.id = v.id"
                      f" AND {_newer('state', 'v')}", params)

    def record_stock(self, machine: str, stock: StockMessage, at: datetime) -> None:
        """The machine's latest stock, and the board's summary of it (:func:`hub.rank.of_stock`)."""
        self.record_stocks([(machine, stock, at)])

    def record_stocks(self, items: list[tuple[str, StockMessage, datetime]]) -> None:
        """Each ``(machine, stock, told at)`` as the machine's latest stock, with the board's
        summary of it (:func:`hub.rank.of_stock`), as :meth:`record_states`; and the products'
        names they give, for the pages (:meth:`product_names`)."""
        latest = _latest(items)
        rows = [(machine, *_stock_columns(stock, at))
                for machine, (stock, at) in sorted(latest.items())]
        set_ = ", ".join(f"{c} = v.{c}" for c in STOCK_COLUMNS)
        for source, params in self.db.rows(STOCK_ROWS, rows):
            self.db.x(f"UPDATE machines SET {set_} FROM {source} WHERE machines.id = v.id"
                      f" AND {_newer('stock', 'v')}", params)
        self._names_said([stock for stock, _ in latest.values()])

    def _names_said(self, stocks: list[StockMessage]) -> None:
        """The products' names ``stocks`` give, where they are new (for the pages)."""
        said = {pid: p.name for stock in stocks
                for pid, p in stock.products.items() if _shown(p.name)}
        if said and time.monotonic() - self._names_read > NAMES_READ_S:
            self._names = {}  # another process may have written others since: read again
        if any(self._names.get(pid) != name for pid, name in said.items()):
            # read again first: the names change seldom, and another process may have
            # written them (only what was read is remembered, so a batch undone is no loss)
            self._names = dict(self.db.x("SELECT id, name FROM products").fetchall())
            self._names_read = time.monotonic()
            changed = sorted((pid, name) for pid, name in said.items()
                             if self._names.get(pid) != name)
            for source, params in self.db.rows((("id", "text"), ("name", "text")), changed):
                self.db.x(f"INSERT INTO products (id, name) SELECT v.id, v.name FROM {source}"
                          " WHERE true ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                          params)

    def product_names(self) -> dict[str, str]:
        """Each product's name, as the machines' stock last gave it (by product id)."""
        return dict(self.db.x("SELECT id, name FROM products ORDER BY id").fetchall())

    def ranks(self) -> dict[str, tuple]:
        """Every machine's summary for the board, by id: ``(availability, last_heard,
        silence, state_rank, look, stock_rank, use_by, version, firmware, board_outdated)``
        (:func:`hub.rank.ranker` and :func:`hub.rank.newest` read it)."""
        return {row[0]: row[1:] for row in self.db.x(
            f"SELECT {RANK_COLUMNS} FROM machines").fetchall()}

    def urgencies(self, silent_before: str, past: str, near: str) -> Urgencies:
        """Each machine's urgency (an index of :data:`hub.rank.URGENCY`) as
        :func:`hub.rank.ranker` works it out from the summary, worked out by the database:
        silent since ``silent_before`` or not online is offline; packs whose use-by day is
        ``past`` or before are a fault, ``near`` or before low. With the newest versions
        (:meth:`newest`), from the same reading of the table."""
        rows = self.db.x(f"SELECT id, {self._urgency()}, version, firmware FROM machines",
                         (silent_before, past, near)).fetchall()
        return Urgencies({row[0]: row[1] for row in rows},
                         rank.newest({(row[2], row[3]) for row in rows}))

    def not_ok(self, ids: set[str] | None, silent_before: str, past: str, near: str,
               heard_since: str | None = None) -> set[str]:
        """Which of ``ids`` (every machine heard, if None; of those, the ones last heard at
        ``heard_since`` or after, if given) are less than "ok" (as :meth:`urgencies`), from
        their summaries alone: a machine that is not has nothing wrong the alerts could say
        (:func:`hub.alerts.conditions_of` finds something only where the summary does), so
        its words need not be read."""
        ok = rank.URGENCY.index("ok")
        bounds = [silent_before, past, near, ok]
        where = f"{self._urgency()} <> ?"
        if ids is None:
            if heard_since is not None:
                where, bounds = f"{where} AND last_heard >= ?", [*bounds, heard_since]
            return {row[0] for row in self.db.x(f"SELECT id FROM machines WHERE {where}",
                                                bounds).fetchall()}
        found: set[str] = set()
        for source, params in self.db.ids(ids):
            found.update(row[0] for row in self.db.x(
                f"SELECT machines.id FROM machines JOIN {source} ON machines.id = v.id"
                f" WHERE {where}", [*params, *bounds]).fetchall())
        return found

    def _urgency(self) -> str:
        """The SQL of a machine's urgency (see :meth:`urgencies`), its parameters the
        silent-before time, the past day and the near day."""
        fault, low, ok = (rank.URGENCY.index(u) for u in ("fault", "low", "ok"))
        return ("CASE WHEN availability IS NULL OR availability <> 'online' OR"
                " (last_heard IS NOT NULL AND last_heard <= ?) THEN 0 ELSE"
                f" {self.db.least}(coalesce(state_rank, {ok}), coalesce(stock_rank, {ok}),"
                f" CASE WHEN silence IS NOT NULL AND silence <> '' THEN {fault} ELSE {ok} END,"
                f" CASE WHEN use_by IS NULL OR use_by = '' THEN {ok} WHEN use_by <= ? THEN"
                f" {fault} WHEN use_by <= ? THEN {low} ELSE {ok} END) END")

    def versions(self) -> dict[str, tuple[str | None, str | None, int | None]]:
        """Each machine's ``(software version, board firmware, board_outdated)``, by id."""
        return {row[0]: tuple(row[1:]) for row in self.db.x(
            "SELECT id, version, firmware, board_outdated FROM machines").fetchall()}

    def newest(self) -> tuple[str | None, str | None]:
        """The newest software and board firmware versions the machines say
        (:func:`hub.rank.newest`), from the few pairs of them there are."""
        return rank.newest(self.db.x("SELECT DISTINCT version, firmware FROM machines"
                                     ).fetchall())

    def fill_ranks(self) -> int:
        """Summaries for machines whose words were kept before there were any (a store just
        upgraded): how many were filled."""
        rows = self.db.x("SELECT id, state, stock FROM machines WHERE (state IS NOT NULL AND"
                         " (state_rank IS NULL OR board_outdated IS NULL)) OR"
                         " (stock IS NOT NULL AND stock_rank IS NULL)").fetchall()
        for mid, state, stock in rows:
            try:
                self._fill_rank(mid, state, stock)
            except BadMessage as e:  # kept by an older hub, unreadable now: the next one mends it
                log.warning("machine %s: its kept words cannot be read (%s); the board ranks "
                            "it when it next says them", mid, e)
        return len(rows)

    def _fill_rank(self, mid: str, state: str | None, stock: str | None) -> None:
        if state:
            said = StateMessage.read(state)
            self.db.x("UPDATE machines SET state_rank = ?, look = ?, version = ?,"
                      " firmware = ?, board_outdated = ? WHERE id = ?",
                      (*rank.of_state(said), *rank.versions_of(said), mid))
        if stock:
            self.db.x("UPDATE machines SET stock_rank = ?, use_by = ? WHERE id = ?",
                      (*rank.of_stock(StockMessage.read(stock)), mid))

    def record_event(self, machine: str, event: EventMessage, at: datetime) -> bool:
        cursor = self.db.x("INSERT INTO events (id, machine, ts, type, slot, product, detail,"
                         " received) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (event.id, machine, event.ts, event.type, event.slot, event.product,
                          event.detail, iso(at)))
        new = cursor.rowcount == 1
        if new and event.type == "expired_removed" and event.count and event.product:
            self.db.x("INSERT INTO expired_removals (event_id, machine, ts, product, packs) VALUES"
                    " (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (event.id, machine, event.ts, event.product, event.count))
        if new and event.type == "silence":  # until a pack comes after it
            self.db.x("UPDATE machines SET silence = ?, silence_at = ? WHERE id = ? AND"
                    " (last_pack IS NULL OR last_pack < ?)",
                    (event.detail or "no pack dispensed", event.ts, machine, event.ts))
        return new

    def machines(self, ids: set[str] | None = None) -> list[Machine]:
        """Every machine heard (or those of ``ids``), by id."""
        if ids is None:
            rows = self.db.x(f"SELECT {MACHINE_COLUMNS} FROM machines ORDER BY id").fetchall()
        else:
            rows = []
            wanted = sorted(ids)
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                rows += self.db.x(f"SELECT {MACHINE_COLUMNS} FROM machines WHERE id IN"
                                f" ({','.join('?' * len(chunk))}) ORDER BY id", chunk).fetchall()
        return [_machine(row) for row in rows]

    def online(self) -> list[str]:
        """The machines whose last word was that they are online, by id."""
        return [row[0] for row in self.db.x("SELECT id FROM machines WHERE availability = ?"
                                          " ORDER BY id", (ONLINE,)).fetchall()]

    def machine(self, machine_id: str) -> Machine | None:
        row = self.db.x(f"SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?",
                      (machine_id,)).fetchone()
        return _machine(row) if row else None

    def events(self, machine: str | None = None, limit: int = 50) -> list[dict]:
        where, params = ("WHERE machine = ?", [machine]) if machine else ("", [])
        rows = self.db.x(f"SELECT id, machine, ts, type, slot, product, detail FROM events {where}"
                       " ORDER BY ts DESC, received DESC LIMIT ?", [*params, limit]).fetchall()
        keys = ("id", "machine", "ts", "type", "slot", "product", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]
    def enrol(self, machine: str, name: str, area: str | None, place: str | None,
              key_file: str, at: datetime) -> None:
        """Staff enrolled ``machine`` (or changed its name, area or key)."""
        with self.db.transaction():
            self.db.x("INSERT INTO enrolled (id, name, area, place, key_file, enrolled) VALUES"
                    " (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                    " area = excluded.area, place = excluded.place,"
                    " key_file = excluded.key_file", (machine, name, area, place, key_file,
                                                      iso(at)))
            self.db.x("DELETE FROM asking WHERE id = ?", (machine,))

    def unenrol(self, machine: str) -> bool:
        """``machine`` is no longer known (its history stays in the reports)."""
        with self.db.transaction():
            # its raised alerts end with it: nothing more is said of a machine removed
            now = iso(datetime.now(UTC))
            self.db.x("UPDATE alerts SET cleared = ? WHERE machine = ? AND cleared IS NULL",
                    (now, machine))
            self.db.x("UPDATE alert_log SET cleared = ? WHERE machine = ? AND cleared IS NULL",
                    (now, machine))
            return self.db.x("DELETE FROM enrolled WHERE id = ?", (machine,)).rowcount == 1

    def enrolled(self) -> list[tuple[str, str, str | None, str | None, str, str]]:
        """``(id, name, area, place, key_file, enrolled)`` of every enrolled machine."""
        return [tuple(r) for r in self.db.x("SELECT id, name, area, place, key_file, enrolled"
                                          " FROM enrolled ORDER BY id").fetchall()]

    ASKING_AT_MOST = 100

    def ask_to_join(self, machine: str, at: datetime) -> bool:
        """A message under ``machine``'s root, which nobody enrolled: kept among at most
        :attr:`ASKING_AT_MOST` such ids (first and last heard), so that a typo shows and a
        flood of made-up ids grows nothing. True if kept."""
        with self.db.transaction():
            if self.db.x("UPDATE asking SET last_heard = ? WHERE id = ?",
                       (iso(at), machine)).rowcount == 1:
                return True
            if self.db.x("SELECT count(*) FROM asking").fetchone()[0] >= self.ASKING_AT_MOST:
                return False
            self.db.x("INSERT INTO asking (id, first_heard, last_heard) VALUES (?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING", (machine, iso(at), iso(at)))
            return True

    def asking(self) -> list[tuple[str, str, str]]:
        """``(id, first heard, last heard)`` of the ids asking to join, latest first."""
        return [tuple(r) for r in self.db.x("SELECT id, first_heard, last_heard FROM asking"
                                          " ORDER BY last_heard DESC, id").fetchall()]



def _machine(row: tuple) -> Machine:
    state = StateMessage.read(row[5]) if row[5] else None
    stock = StockMessage.read(row[6]) if row[6] else None
    return Machine(row[0], row[1], row[2], row[3], row[4], state, stock, *row[7:12])

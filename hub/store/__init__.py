"""What the hub keeps: machines, usage, events, commands, people, alerts and tallies, in its
own SQLite file (the embedded default) or in PostgreSQL (psycopg 3) for a fleet past one box.

Exactly once: a usage bucket is keyed on its ``id`` (a bucket heard twice counts once, even
by two hub processes at the same moment: the database's unique key decides), an event on
its ``id``. Confirmed and unconfirmed counts stay apart.

A :class:`HubStore` is one database connection (:mod:`hub.store.db`: the connection, its
transactions, the schema's versions, the alerts' lease and every difference between SQLite
and PostgreSQL) and a small class per concern over it, each writing SQL both databases read:

- ``store.fleet``: machines and their latest word, events, enrolment (:mod:`.fleet`);
- ``store.usage``: buckets and the roll-ups the reports add up (:mod:`.usage`);
- ``store.tallies``: counts from people (:mod:`.tallies`);
- ``store.commands``: commands, their answers, who did what (:mod:`.commands`);
- ``store.people``: users, sessions, failed logins (:mod:`.people`);
- ``store.alerts``: alerts and their deliveries (:mod:`.alerts`).

``with store.transaction():`` holds across concerns: a batch from the listener touches the
fleet and the usage in one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.clock import iso
from hub.store.alerts import Alerts
from hub.store.commands import Commands
from hub.store.db import Db, PgDb, SqliteDb, StoreError, first_line
from hub.store.fleet import Fleet, Machine
from hub.store.people import People
from hub.store.schema import CATCH_UP, SCHEMA_VERSION, V8
from hub.store.tallies import Tallies, Tally
from hub.store.usage import Usage

__all__ = ["CATCH_UP", "SCHEMA_VERSION", "V8", "HubStore", "Machine", "StoreError", "Tally",
           "first_line", "open_store"]


class HubStore:
    """The hub's database and its concerns (see the module's words)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.fleet = Fleet(db)
        self.usage = Usage(db)
        self.tallies = Tallies(db)
        self.commands = Commands(db)
        self.people = People(db)
        self.alerts = Alerts(db)
        with db.transaction():
            self.fleet.fill_ranks()

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db.kind

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.transaction():
            yield

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """Statements sent together (:meth:`Db.pipeline`)."""
        with self.db.pipeline():
            yield

    def lead(self) -> bool:
        """Whether this process runs the alerts (:meth:`Db.lead`)."""
        return self.db.lead()

    def unavailable(self, error: BaseException) -> bool:
        """Whether ``error`` says the database is away or busy (try again later)."""
        return self.db.unavailable(error)

    def backup(self, destination: str) -> None:
        self.db.backup(destination)

    def ping(self) -> None:
        """A question the database must answer (raises when it cannot)."""
        self.db.x("SELECT 1").fetchone()

    def forget_before(self, cutoff: datetime) -> int:
        """Drop raw events, finished alert deliveries and the hub's own catch-up questions
        (with their answers) from before ``cutoff``
        (``[database] keep_events_days``); usage buckets are kept for ever. Returns how many
        events went."""
        with self.db.transaction():
            gone = self.db.x("DELETE FROM events WHERE received < ?", (iso(cutoff),)).rowcount
            self.db.x("DELETE FROM deliveries WHERE done IS NOT NULL AND created < ?",
                    (iso(cutoff),))
            self.db.x('DELETE FROM commands WHERE "user" = ? AND sent < ?', (CATCH_UP, iso(cutoff)))
            self.db.x("DELETE FROM alert_log WHERE cleared < ?", (iso(cutoff),))
        return gone



def SqliteStore(path: str | Path) -> HubStore:  # noqa: N802 (it reads as the class it was)
    """The hub's SQLite file at ``path`` (WAL; more than one hub process may share it on one
    box, taking turns to write)."""
    return HubStore(SqliteDb(path))


def PgStore(url: str, password: str | None = None) -> HubStore:  # noqa: N802
    """The hub's tables in PostgreSQL at ``url``."""
    return HubStore(PgDb(url, password))


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

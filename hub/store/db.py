"""The hub's database, SQLite or PostgreSQL: the connection, its transactions, the schema's
versions, the lease that lets one hub process of several run the alerts, and every
difference between the two dialects. The concerns (:mod:`hub.store.fleet` and the others)
write SQL both read, through :meth:`Db.x` (``?`` placeholders) and :meth:`Db.rows`.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub.store.schema import LEADER_KEY, MIGRATIONS, PG_MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("hub.store")

PG_TYPES = {"text": "text", "int": "integer", "bigint": "bigint", "real": "double precision"}


class Db:
    """One connection, used under a lock by the listener, the web pages and the alerts."""

    kind = ""
    order = "rowid"  # what keeps commands in the order they were recorded
    least = "min"  # the smallest of its arguments

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def close(self) -> None:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction (nested ones are part of the outer)."""
        raise NotImplementedError
        yield

    def x(self, sql: str, params: tuple | list = ()) -> Any:
        """Run ``sql`` (``?`` placeholders) and return its cursor."""
        raise NotImplementedError

    def rows(self, columns: tuple[tuple[str, str], ...], rows: list[tuple]
             ) -> Iterator[tuple[str, list]]:
        """``rows`` as a table ``v`` whose columns are ``columns`` (name, and ``text``,
        ``int``, ``bigint`` or ``real``), for a statement to read ``FROM``: as ``(from, parameters)``,
        in as few statements as the database takes (PostgreSQL one, SQLite a chunk at a
        time). Nothing when there are no rows."""
        raise NotImplementedError

    def ids(self, ids: Iterable[str]) -> Iterator[tuple[str, list]]:
        """``ids``, each once and in order, as :meth:`rows` of one ``id`` column (a set of
        machines for a statement to join)."""
        return self.rows((("id", "text"),), [(i,) for i in sorted(set(ids))])

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """Statements whose results nobody reads sent together (PostgreSQL's pipeline mode:
        one round trip for them all, not one each; the first error is raised at the end of
        the block). Nothing for SQLite, which has no round trips."""
        yield

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


class SqliteDb(Db):
    """The hub's SQLite file at ``path`` (WAL; more than one hub process may share it on one
    box, taking turns to write)."""

    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 30000")  # another hub process is writing
        self.conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a bucket is acknowledged to the broker once committed, so the commit must
        # outlive a power cut (NORMAL may lose the last commits in WAL mode)
        self.conn.execute("PRAGMA synchronous=FULL")
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
            self.conn.close()
            if self._lease is not None:
                os.close(self._lease)
                self._lease = None

    def _migrate(self) -> None:
        import sqlite_utils  # for its table creation, here only

        db = sqlite_utils.Database(self.conn)
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer nspvend hub (schema "
                             f"{version}); install it or move the file aside")
        for step in range(version, SCHEMA_VERSION):
            MIGRATIONS[step](db)
            self.conn.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def x(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, params)

    def rows(self, columns: tuple[tuple[str, str], ...], rows: list[tuple]
             ) -> Iterator[tuple[str, list]]:
        names = ", ".join(f"column{i + 1} AS {name}" for i, (name, _) in enumerate(columns))
        mark = "(" + ", ".join("?" * len(columns)) + ")"
        for chunk in _chunks(rows, 400):
            yield (f"(SELECT {names} FROM (VALUES {', '.join([mark] * len(chunk))})) AS v",
                   [value for row in chunk for value in row])

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
                self.conn.backup(target)
        finally:
            target.close()


class PgDb(Db):
    """The hub's tables in PostgreSQL at ``url`` (psycopg 3): the store for a fleet past one
    box, shared by several hub processes. The alerts' lease is an advisory lock held by one
    process's own connection: PostgreSQL lets it go when that process dies."""

    kind = "postgresql"
    order = "seq"
    least = "LEAST"

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

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        with self.lock, self.conn.pipeline():
            yield

    def _reconnect_if_lost(self) -> None:
        """A new connection for one that was lost, never inside a transaction (the rest of it
        would then be committed a statement at a time)."""
        if self._depth == 0 and (self.conn.closed or self.conn.broken):
            log.warning("the database connection was lost; connecting again")
            self.conn = self._connect()

    def x(self, sql: str, params: tuple | list = ()) -> Any:
        with self.lock:
            self._reconnect_if_lost()  # a page read after the server restarted
            return self.conn.execute(_pg(sql), params)

    def rows(self, columns: tuple[tuple[str, str], ...], rows: list[tuple]
             ) -> Iterator[tuple[str, list]]:
        # the rows as one JSON text of arrays: one short statement, its one parameter
        # written by the json module's C code (psycopg's pure-Python reading of a statement
        # with thousands of placeholders, and then its writing of arrays, were most of a
        # batch's time)
        if not rows:
            return
        names = ", ".join(f"(e->>{i})::{PG_TYPES[kind]} AS {name}"
                          for i, (name, kind) in enumerate(columns))
        yield (f"(SELECT {names} FROM json_array_elements(?::json) AS e) AS v",
               [json.dumps(rows)])

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


@functools.cache
def _pg(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (no query here has a literal ``?``)."""
    return sql.replace("?", "%s")

"""Staff: their names, roles and password hashes, their sessions, and failed logins."""

from __future__ import annotations

from datetime import datetime

from controller.clock import iso
from hub.store.db import Db


class People:
    """Users and sessions (``store.people``)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def set_user(self, name: str, role: str, password_hash: str, at: datetime) -> None:
        """Add a user, or give one a new role and password: their sessions end."""
        self.db.x('DELETE FROM sessions WHERE "user" = ?', (name,))
        self.db.x("INSERT INTO users (name, role, hash, created) VALUES (?, ?, ?, ?) ON CONFLICT"
                "(name) DO UPDATE SET role = excluded.role, hash = excluded.hash",
                (name, role, password_hash, iso(at)))

    def remove_user(self, name: str) -> bool:
        with self.db.transaction():
            self.db.x('DELETE FROM sessions WHERE "user" = ?', (name,))
            return self.db.x("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def user(self, name: str) -> tuple[str, str] | None:
        """``(role, hash)`` of user ``name``."""
        row = self.db.x("SELECT role, hash FROM users WHERE name = ?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def users(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.db.x("SELECT name, role, created FROM users ORDER BY name"
                                          ).fetchall()]

    def new_session(self, token: str, user: str, csrf: str, at: datetime) -> None:
        self.db.x('INSERT INTO sessions (token, "user", csrf, created, seen) VALUES (?, ?, ?, ?, ?)',
                (token, user, csrf, iso(at), iso(at)))

    def session(self, token: str) -> tuple[str, str, str, str] | None:
        """``(user, role, csrf, created)`` of a session whose user still exists."""
        row = self.db.x('SELECT s."user", u.role, s.csrf, s.created FROM sessions s JOIN users u'
                      ' ON u.name = s."user" WHERE s.token = ?', (token,)).fetchone()
        return tuple(row) if row else None

    def end_session(self, token: str) -> None:
        self.db.x("DELETE FROM sessions WHERE token = ?", (token,))

    def end_sessions_before(self, created: datetime) -> None:
        self.db.x("DELETE FROM sessions WHERE created < ?", (iso(created),))

    def login_failures(self, who: str) -> tuple[int, str | None]:
        row = self.db.x("SELECT failures, last FROM login_failures WHERE who = ?", (who,)).fetchone()
        return (row[0], row[1]) if row else (0, None)

    def login_failed(self, who: str, at: datetime) -> None:
        self.db.x("INSERT INTO login_failures (who, failures, last) VALUES (?, 1, ?) ON CONFLICT"
                "(who) DO UPDATE SET failures = login_failures.failures + 1,"
                " last = excluded.last", (who, iso(at)))

    def login_succeeded(self, who: str) -> None:
        self.db.x("DELETE FROM login_failures WHERE who = ?", (who,))

"""Commands staff (and the hub's catch-up) sent to machines, their answers, and who did
what."""

from __future__ import annotations

import json
from datetime import datetime

from controller.clock import iso
from controller.messages import CommandResult, compact
from hub.store.db import Db
from hub.store.schema import CATCH_UP


class Commands:
    """Commands and their answers (``store.commands``)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def record(self, command_id: str, machine: str, user: str, command: dict,
                       at: datetime) -> None:
        self.db.x('INSERT INTO commands (id, machine, "user", sent, command) VALUES (?, ?, ?, ?, ?)',
                (command_id, machine, user, iso(at), compact(command)))

    def get(self, command_id: str) -> dict | None:
        row = self.db.x('SELECT id, machine, "user", sent, command, answered, ok, answer FROM'
                      " commands WHERE id = ?", (command_id,)).fetchone()
        return _command(row) if row else None

    def recent(self, machine: str, limit: int = 30) -> list[dict]:
        rows = self.db.x('SELECT id, machine, "user", sent, command, answered, ok, answer FROM'
                       f" commands WHERE machine = ? ORDER BY sent DESC, {self.db.order} DESC"
                       " LIMIT ?", (machine, limit)).fetchall()
        return [_command(r) for r in rows]

    def staff_actions(self, since: str, limit: int = 500) -> list[dict]:
        """What people did since ``since``, latest first: commands sent (``command``) and
        alerts acknowledged (``ack``), each with who and when. Tallies are by hour
        (:meth:`hub.store.tallies.Tallies.activity`)."""
        commands = self.db.x('SELECT sent, "user", machine, command, ok, answered FROM commands'
                           ' WHERE sent >= ? AND "user" <> ? ORDER BY sent DESC LIMIT ?',
                           (since, CATCH_UP, limit)).fetchall()
        acks = self.db.x("SELECT acked_at, acked_by, machine, type, subject FROM alert_log"
                       " WHERE acked_at >= ? ORDER BY acked_at DESC LIMIT ?",
                       (since, limit)).fetchall()
        out = [{"kind": "command", "at": at, "user": user, "machine": machine,
                "command": json.loads(command), "ok": None if ok is None else bool(ok),
                "answered": answered}
               for at, user, machine, command, ok, answered in commands]
        out += [{"kind": "ack", "at": at, "user": user, "machine": machine, "type": kind,
                 "subject": subject} for at, user, machine, kind, subject in acks]
        return sorted(out, key=lambda a: a["at"], reverse=True)[:limit]

    def record_result(self, machine: str, result: CommandResult, at: datetime) -> None:
        """A machine's answer to a command the hub sent (others' answers are ignored)."""
        self.db.x("UPDATE commands SET answered = ?, ok = ?, answer = ? WHERE id = ? AND machine = ?"
                " AND answered IS NULL",
                (iso(at), int(result.ok), compact(result.payload()), result.id, machine))


def _command(row: tuple) -> dict:
    keys = ("id", "machine", "user", "sent", "command", "answered", "ok", "answer")
    out = dict(zip(keys, row, strict=True))
    out["command"] = json.loads(out["command"])
    out["answer"] = json.loads(out["answer"]) if out["answer"] else None
    out["ok"] = None if out["ok"] is None else bool(out["ok"])
    return out

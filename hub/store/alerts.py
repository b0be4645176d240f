"""Alerts: each condition raised and cleared, every one raised (the alerts page, and staff's
"I'm on it"), and the deliveries of what staff are told."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from controller.clock import iso
from hub.store.db import Db


class Alerts:
    """Alerts and their deliveries (``store.alerts``)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def raised_alerts(self, machines: set[str] | None = None
                      ) -> dict[tuple[str, str, str], dict]:
        """Every alert raised and not cleared (or those of ``machines``), by ``(machine,
        type, subject)``: when it was raised, its words, and the routes told of it."""
        columns = "alerts.machine, type, subject, raised, detail, told"
        if machines is None:
            rows = self.db.x(f"SELECT {columns} FROM alerts WHERE cleared IS NULL").fetchall()
        else:
            rows = []
            for source, params in self.db.ids(machines):
                rows += self.db.x(f"SELECT {columns} FROM alerts JOIN {source} ON"
                                  " alerts.machine = v.id WHERE cleared IS NULL",
                                  params).fetchall()
        return {(m, t, s): {"raised": r, "detail": d, "told": told}
                for m, t, s, r, d, told in rows}

    def raised_count(self) -> int:
        """How many alerts are raised now."""
        return self.db.x("SELECT count(*) FROM alerts WHERE cleared IS NULL").fetchone()[0]

    def raised_machines(self, heard_since: str | None = None) -> set[str]:
        """The machines with an alert raised (those last heard at ``heard_since`` or after,
        if given)."""
        if heard_since is None:
            rows = self.db.x("SELECT DISTINCT machine FROM alerts WHERE cleared IS NULL")
        else:
            rows = self.db.x("SELECT DISTINCT alerts.machine FROM alerts JOIN machines ON"
                             " machines.id = alerts.machine WHERE alerts.cleared IS NULL AND"
                             " machines.last_heard >= ?", (heard_since,))
        return {row[0] for row in rows.fetchall()}

    def set_told(self, machine: str, kind: str, subject: str, routes: list[int],
                 was: str | None) -> bool:
        """Which routes have heard this alert raised (so they, and only they, hear it end):
        True if this changed it from ``was`` (the ``told`` read before); False if another
        process told them first."""
        return self.db.x("UPDATE alerts SET told = ? WHERE machine = ? AND type = ? AND subject = ?"
                       " AND cleared IS NULL AND coalesce(told, '[]') = ?",
                       (json.dumps(routes), machine, kind, subject, was or "[]")).rowcount == 1

    def raise_alert(self, machine: str, kind: str, subject: str, detail: str,
                    at: datetime) -> bool:
        """Raise an alert: True if this raised it (False: it was raised already)."""
        raised = self.db.x("INSERT INTO alerts (machine, type, subject, raised, cleared, detail, told) VALUES"
                " (?, ?, ?, ?, NULL, ?, '[]') ON CONFLICT(machine, type, subject) DO UPDATE SET"
                " raised = excluded.raised, cleared = NULL, detail = excluded.detail, told = '[]'"
                " WHERE alerts.cleared IS NOT NULL",  # raising a raised alert changes nothing
                (machine, kind, subject, iso(at), detail)).rowcount == 1
        if raised:
            self.db.x("INSERT INTO alert_log (machine, type, subject, detail, raised) VALUES"
                    " (?, ?, ?, ?, ?)", (machine, kind, subject, detail, iso(at)))
        return raised

    def clear_alert(self, machine: str, kind: str, subject: str, at: datetime) -> bool:
        """Clear a raised alert: True if this cleared it (False: it was not raised)."""
        cleared = self.db.x("UPDATE alerts SET cleared = ? WHERE machine = ? AND type = ? AND"
                          " subject = ? AND cleared IS NULL",
                          (iso(at), machine, kind, subject)).rowcount == 1
        if cleared:
            self.db.x("UPDATE alert_log SET cleared = ? WHERE machine = ? AND type = ? AND"
                    " subject = ? AND cleared IS NULL", (iso(at), machine, kind, subject))
        return cleared

    ALERT_KEYS = ("id", "machine", "type", "subject", "detail", "raised", "cleared",
                  "acked_by", "acked_at")

    def alert_log(self, since: datetime) -> list[dict]:
        """Alerts raised now, and those raised or cleared since ``since``: newest first."""
        rows = self.db.x(f"SELECT {', '.join(self.ALERT_KEYS)} FROM alert_log WHERE cleared IS NULL"
                       " OR cleared >= ? OR raised >= ? ORDER BY raised DESC, id DESC",
                       (iso(since), iso(since))).fetchall()
        return [dict(zip(self.ALERT_KEYS, r, strict=True)) for r in rows]

    def acknowledged(self) -> dict[tuple[str, str, str], tuple[str, str]]:
        """Raised alerts someone is on: (machine, type, subject) -> (who, when)."""
        rows = self.db.x("SELECT machine, type, subject, acked_by, acked_at FROM alert_log"
                       " WHERE cleared IS NULL AND acked_by IS NOT NULL").fetchall()
        return {(m, t, s): (who, at) for m, t, s, who, at in rows}

    def acknowledge(self, alert: int, user: str, at: datetime) -> bool:
        """Staff ``user`` is on alert ``alert``: True if it is raised and was not taken."""
        return self.db.x("UPDATE alert_log SET acked_by = ?, acked_at = ? WHERE id = ? AND"
                       " cleared IS NULL AND acked_by IS NULL",
                       (user, iso(at), alert)).rowcount == 1

    def queue_delivery(self, route: int, channel: str, target: str, body: dict,
                       at: datetime) -> None:
        self.db.x("INSERT INTO deliveries (route, channel, target, body, created, attempts,"
                " next_try) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (route, channel, target, json.dumps(body), iso(at), iso(at)))

    def due_deliveries(self, at: datetime, limit: int = 20,
                       claim_s: float = 60.0) -> list[tuple[int, str, str, dict, int]]:
        """Deliveries due at ``at``, each claimed for ``claim_s`` (its next try moved on), so
        that two processes running the alerts for a moment (as the lease changes hands) do
        not both send it; one not marked delivered or failed by then is tried again."""
        rows = self.db.x("SELECT id, channel, target, body, attempts, next_try FROM deliveries"
                       " WHERE done IS NULL AND next_try <= ? ORDER BY id LIMIT ?",
                       (iso(at), limit)).fetchall()
        claimed = []
        until = iso(at + timedelta(seconds=claim_s))
        for i, c, t, b, a, due in rows:
            if self.db.x("UPDATE deliveries SET next_try = ? WHERE id = ? AND done IS NULL"
                       " AND next_try = ?", (until, i, due)).rowcount == 1:
                claimed.append((i, c, t, json.loads(b), a))
        return claimed

    def delivered(self, delivery: int, at: datetime) -> None:
        self.db.x("UPDATE deliveries SET done = ?, attempts = attempts + 1, error = NULL"
                " WHERE id = ?", (iso(at), delivery))

    def delivery_failed(self, delivery: int, error: str, retry_at: datetime | None,
                        at: datetime, count: bool = True) -> None:
        """Not delivered: try again at ``retry_at``, or (None) give up."""
        self.db.x("UPDATE deliveries SET attempts = attempts + ?, error = ?, next_try = ?,"
                " done = ? WHERE id = ?",
                (int(count), error[:500], iso(retry_at) if retry_at else None,
                 None if retry_at else "gave up " + iso(at), delivery))
    def deliveries_given_up(self) -> int:
        # the pattern a parameter: psycopg reads a % in the statement as a placeholder
        return self.db.x("SELECT count(*) FROM deliveries WHERE done LIKE ?",
                         ("gave up%",)).fetchone()[0]

    def delivery_route(self, delivery: int) -> int:
        return self.db.x("SELECT route FROM deliveries WHERE id = ?", (delivery,)).fetchone()[0]

    def deliveries(self) -> list[dict]:
        keys = ("id", "route", "channel", "target", "body", "attempts", "done", "error")
        rows = self.db.x(f"SELECT {', '.join(keys)} FROM deliveries ORDER BY id").fetchall()
        return [{**dict(zip(keys, r, strict=True)), "body": json.loads(r[4])} for r in rows]

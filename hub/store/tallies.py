"""Counts from people (the tally page): a bucket per person, channel and hour, its counts
replaced by each later send of it; never a tap's time."""

from __future__ import annotations

from dataclasses import dataclass

from hub.store.db import Db


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


class Tallies:
    """The tally buckets (``store.tallies``)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def record(self, tally: Tally, user: str) -> str:
        """Keep a tally bucket, its counts replacing what an earlier send of it said (the page
        sends the hour's totals so far, each change a higher ``version``, so a resend counts
        once and a send overtaken by a later one changes nothing): ``new``, ``updated`` or
        ``same``; ``taken`` (nothing changed) when the id is another person's, channel's or
        hour's."""
        counts = sorted((p, n) for p, n in tally.counts.items() if n)
        with self.db.transaction():
            created = self.db.x('INSERT INTO tallies (id, channel, start, "end", "user", version)'
                              " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              (tally.id, tally.channel, tally.start, tally.end, user,
                               tally.version)).rowcount
            if created:
                outcome = "new"
            else:
                # a no-op update takes the row's lock (PostgreSQL), so that two sends of one
                # bucket at once take turns
                self.db.x('UPDATE tallies SET "user" = "user" WHERE id = ?', (tally.id,))
                row = self.db.x('SELECT channel, start, "end", "user", version FROM tallies'
                              " WHERE id = ?", (tally.id,)).fetchone()
                if tuple(row[:4]) != (tally.channel, tally.start, tally.end, user):
                    return "taken"
                if tally.version <= row[4]:
                    return "same"
                self.db.x("UPDATE tallies SET version = ? WHERE id = ?", (tally.version, tally.id))
                self.db.x("DELETE FROM tally_counts WHERE tally_id = ?", (tally.id,))
                outcome = "updated"
            if counts:
                marks = ", ".join(["(?, ?, ?)"] * len(counts))
                self.db.x(f"INSERT INTO tally_counts (tally_id, product, count) VALUES {marks}",
                        [v for p, n in counts for v in (tally.id, p, n)])
        return outcome

    def totals(self, start: str, end: str) -> tuple[list[tuple[str, str, int]],
                                                          dict[str, int]]:
        """``(channel, product, count)`` for tally buckets starting in [start, end), and the
        buckets per channel."""
        rows = self.db.x("SELECT t.channel, c.product, sum(c.count) FROM tallies t JOIN"
                       " tally_counts c ON c.tally_id = t.id WHERE t.start >= ? AND t.start < ?"
                       " GROUP BY t.channel, c.product ORDER BY t.channel, c.product",
                       (start, end)).fetchall()
        buckets = self.db.x("SELECT channel, count(*) FROM tallies WHERE start >= ? AND start < ?"
                          " GROUP BY channel", (start, end)).fetchall()
        return [tuple(r) for r in rows], dict(buckets)

    def activity(self, since: str, limit: int = 500) -> list[tuple[str, str, str, str, int]]:
        """Who tallied what: ``(user, hour start, hour end, channel, packs)``, latest first."""
        rows = self.db.x('SELECT t."user", t.start, t."end", t.channel, sum(coalesce(c.count, 0))'
                       " FROM tallies t LEFT JOIN tally_counts c ON c.tally_id = t.id"
                       ' WHERE t.start >= ? GROUP BY t."user", t.start, t."end", t.channel'
                       ' ORDER BY t.start DESC, t."user", t.channel LIMIT ?',
                       (since, limit)).fetchall()
        return [tuple(r) for r in rows]

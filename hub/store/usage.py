"""Usage and the reports' sums: each bucket kept once, its counts, and the daily and monthly
roll-ups added to as buckets arrive, which the reports add up (whole months from the
monthly ones, whole days left from the daily ones, the hours at either edge from the
buckets themselves)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.clock import iso, parse_iso
from controller.messages import UsageMessage
from hub.store.db import Db

BUCKET = (("id", "text"), ("machine", "text"), ("start", "text"), ("until", "text"),
          ("clock_synced", "int"), ("received", "text"))
COUNTS = (("bucket_id", "text"), ("product", "text"), ("confirmed", "int"),
          ("unconfirmed", "int"))


class Usage:
    """The buckets and their sums (``store.usage``)."""

    def __init__(self, db: Db) -> None:
        self.db = db

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
        rows = [(u.id, m, u.start, u.end, int(u.clock_synced), iso(at)) for m, u in items]
        inserted: set[str] = set()
        for source, params in self.db.rows(BUCKET, rows):
            inserted |= {r[0] for r in self.db.x(
                f'INSERT INTO buckets (id, machine, start, "end", clock_synced, received)'
                f" SELECT * FROM {source} WHERE true ON CONFLICT DO NOTHING RETURNING id",
                params).fetchall()}
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
        counted = (("confirmed", "int"), ("unconfirmed", "int"))
        covered = (("seconds", "real"), ("buckets", "int"))
        fleet_counted = (("confirmed", "bigint"), ("unconfirmed", "bigint"))
        fleet_covered = (("seconds", "real"), ("buckets", "bigint"))
        text = "text"
        # what follows is written, never read back: sent in one go
        with self.db.pipeline():
            for source, params in self.db.rows(COUNTS, counts):
                self.db.x("INSERT INTO bucket_counts (bucket_id, product, confirmed, unconfirmed)"
                          f" SELECT * FROM {source} WHERE true", params)
            self._add_up("daily_counts", (("machine", text), ("day", text), ("product", text)),
                         counted, daily)
            self._add_up("daily_cover", (("machine", text), ("day", text)), covered, cover)
            self._add_up("monthly_counts", (("machine", text), ("month", text),
                                            ("product", text)), counted, monthly)
            self._add_up("monthly_cover", (("machine", text), ("month", text)), covered,
                         month_cover)
            # the whole fleet's, by product: what a report of every machine adds up
            self._add_up("fleet_daily", (("day", text), ("product", text)), fleet_counted,
                         _without_machine(daily))
            self._add_up("fleet_monthly", (("month", text), ("product", text)), fleet_counted,
                         _without_machine(monthly))
            self._add_up("fleet_daily_cover", (("day", text),), fleet_covered,
                         _without_machine(cover))
            self._add_up("fleet_monthly_cover", (("month", text),), fleet_covered,
                         _without_machine(month_cover))
            # a pack ends a silence told before it; the latest bucket with a pack is kept
            for source, params in self.db.rows((("id", text), ("e", text)), sorted(last.items())):
                self.db.x("UPDATE machines SET"
                          " last_pack = CASE WHEN last_pack IS NULL OR last_pack < v.e THEN v.e"
                          " ELSE last_pack END,"
                          " silence = CASE WHEN silence_at < v.e THEN NULL ELSE silence END,"
                          " silence_at = CASE WHEN silence_at < v.e THEN NULL ELSE silence_at END"
                          f" FROM {source} WHERE machines.id = v.id", params)
        return flags

    def _add_up(self, table: str, keys: tuple[tuple[str, str], ...],
                values: tuple[tuple[str, str], ...], rows: dict[tuple, list]) -> None:
        """Add ``rows`` (key -> values, one row a key) to the roll-up ``table`` (columns
        as :meth:`Db.rows` takes them)."""
        names = [name for name, _ in keys + values]
        added = ", ".join(f"{v} = {table}.{v} + excluded.{v}" for v, _ in values)
        # most products give nothing most hours: a row kept already is then left as it is
        # (not written again, which on PostgreSQL is a new version of the row and its index)
        something = " OR ".join(f"excluded.{v} <> 0" for v, _ in values)
        for source, params in self.db.rows(keys + values, [(*k, *v) for k, v in sorted(rows.items())]):
            self.db.x(f"INSERT INTO {table} ({', '.join(names)}) SELECT * FROM {source}"
                      f" WHERE true ON CONFLICT ({', '.join(n for n, _ in keys)})"
                      f" DO UPDATE SET {added} WHERE {something}", params)

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
            rows += self.db.x("SELECT machine, product, sum(confirmed), sum(unconfirmed) FROM"
                            f" monthly_counts WHERE month >= ? AND month < ?{only}"
                            " GROUP BY machine, product", [*months, *extra]).fetchall()
        for span in days:
            rows += self.db.x("SELECT machine, product, sum(confirmed), sum(unconfirmed) FROM"
                            f" daily_counts WHERE day >= ? AND day < ?{only}"
                            " GROUP BY machine, product", [*span, *extra]).fetchall()
        for a, b in edges:
            rows += self.db.x("SELECT b.machine, c.product, sum(c.confirmed), sum(c.unconfirmed)"
                            " FROM buckets b JOIN bucket_counts c ON c.bucket_id = b.id"
                            f" WHERE b.start >= ? AND b.start < ?{only.replace('machine', 'b.machine')}"
                            " GROUP BY b.machine, c.product", [a, b, *extra]).fetchall()
        for machine, product, confirmed, unconfirmed in rows:
            total = found.setdefault((machine, product), [0, 0])
            total[0] += confirmed or 0
            total[1] += unconfirmed or 0
        return [(m, p, c, u) for (m, p), (c, u) in sorted(found.items())]

    def fleet_counts(self, start: str, end: str) -> list[tuple[str, int, int]]:
        """``(product, confirmed, unconfirmed)`` of every machine's buckets that start in
        [start, end), from the fleet's own roll-ups: a dozen rows for a year, whatever the
        fleet (the hours at either edge from the buckets)."""
        months, days, edges = _split(start, end)
        rows: list[tuple] = []
        if months:
            rows += self.db.x("SELECT product, CAST(sum(confirmed) AS BIGINT), CAST(sum("
                              "unconfirmed) AS BIGINT) FROM fleet_monthly WHERE month >= ? AND"
                              " month < ? GROUP BY product", months).fetchall()
        for span in days:
            rows += self.db.x("SELECT product, CAST(sum(confirmed) AS BIGINT), CAST(sum("
                              "unconfirmed) AS BIGINT) FROM fleet_daily WHERE day >= ? AND"
                              " day < ? GROUP BY product", span).fetchall()
        for a, b in edges:
            rows += self.db.x("SELECT c.product, sum(c.confirmed), sum(c.unconfirmed) FROM"
                              " buckets b JOIN bucket_counts c ON c.bucket_id = b.id"
                              " WHERE b.start >= ? AND b.start < ? GROUP BY c.product",
                              (a, b)).fetchall()
        found: dict[str, list[int]] = {}
        for product, confirmed, unconfirmed in rows:
            total = found.setdefault(product, [0, 0])
            total[0] += confirmed or 0
            total[1] += unconfirmed or 0
        return [(p, c, u) for p, (c, u) in sorted(found.items())]

    def fleet_cover(self, start: str, end: str) -> float:
        """Seconds of [start, end) every machine's buckets cover, added up."""
        months, days, edges = _split(start, end)
        seconds = 0.0
        if months:
            seconds += self.db.x("SELECT sum(seconds) FROM fleet_monthly_cover WHERE"
                                 " month >= ? AND month < ?", months).fetchone()[0] or 0.0
        for span in days:
            seconds += self.db.x("SELECT sum(seconds) FROM fleet_daily_cover WHERE day >= ?"
                                 " AND day < ?", span).fetchone()[0] or 0.0
        for a, b in edges:
            seconds += sum(s for s, _ in self._edge_cover(a, b).values())
        return seconds

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
            for machine, seconds, buckets in self.db.x(
                    "SELECT machine, sum(seconds), sum(buckets) FROM monthly_cover WHERE"
                    " month >= ? AND month < ? GROUP BY machine", months).fetchall():
                add(machine, seconds, buckets)
        for span in days:
            for machine, seconds, buckets in self.db.x(
                    "SELECT machine, sum(seconds), sum(buckets) FROM daily_cover WHERE day >= ?"
                    " AND day < ? GROUP BY machine", span).fetchall():
                add(machine, seconds, buckets)
        for a, b in edges:
            for machine, (seconds, buckets) in self._edge_cover(a, b).items():
                add(machine, seconds, buckets)
        return found

    def _edge_cover(self, a: str, b: str) -> dict[str, tuple[float, int]]:
        """Per machine, the part of each bucket inside [a, b), as the roll-ups count a bucket
        across midnight; a bucket is counted where it starts (buckets last at most a day)."""
        since, until = parse_iso(a), parse_iso(b)
        found: dict[str, tuple[float, int]] = {}
        for machine, s, e in self.db.x(
                'SELECT machine, start, "end" FROM buckets WHERE start >= ? AND start < ?'
                ' AND "end" > ?', (iso(since - timedelta(days=1)), b, a)).fetchall():
            began = parse_iso(s)
            inside = (min(parse_iso(e), until) - max(began, since)).total_seconds()
            was = found.get(machine, (0.0, 0))
            found[machine] = (was[0] + max(0.0, inside), was[1] + int(began >= since))
        return found

    def usage_totals(self, start: str, end: str) -> list[tuple[str, str, int, int, int]]:
        """``(machine, product, confirmed, unconfirmed, buckets)`` for buckets starting in
        [start, end)."""
        cover = self._cover(start, end)
        return [(m, p, c, u, cover.get(m, (0.0, 0))[1])
                for m, p, c, u in self.period_counts(start, end)]

    def expired_totals(self, start: str, end: str) -> list[tuple[str, int]]:
        """``(product, packs)`` staff took out past their date in [start, end)."""
        return [tuple(r) for r in self.db.x(
            "SELECT product, sum(packs) FROM expired_removals WHERE ts >= ? AND ts < ?"
            " GROUP BY product ORDER BY product", (start, end)).fetchall()]

    def last_packs(self) -> dict[str, str]:
        """Per machine, the end of its latest bucket that held a pack."""
        return dict(self.db.x("SELECT id, last_pack FROM machines WHERE last_pack IS NOT NULL"
                            ).fetchall())

    def recent_usage(self, machines: list[str], since: str) -> dict[str, dict[str, tuple[int, float]]]:
        """Per machine of ``machines`` and product: packs (confirmed + unconfirmed) in the
        buckets of the UTC days from the one holding ``since``, and the hours those buckets
        cover (the daily roll-ups: a few rows a machine, whatever the hour)."""
        day = since[:10]
        out: dict[str, dict[str, tuple[int, float]]] = {}
        hours: dict[str, float] = {}
        for i in range(0, len(machines), 500):
            chunk = machines[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for machine, seconds in self.db.x(
                    f"SELECT machine, sum(seconds) FROM daily_cover WHERE machine IN ({marks})"
                    " AND day >= ? GROUP BY machine", [*chunk, day]).fetchall():
                hours[machine] = (seconds or 0.0) / 3600
            for machine, product, packs in self.db.x(
                    "SELECT machine, product, sum(confirmed + unconfirmed) FROM daily_counts"
                    f" WHERE machine IN ({marks}) AND day >= ? GROUP BY machine, product",
                    [*chunk, day]).fetchall():
                out.setdefault(machine, {})[product] = (packs, hours.get(machine, 0.0))
        return out


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


def _without_machine(rows: dict[tuple, list]) -> dict[tuple, list]:
    """Roll-ups keyed ``(machine, *rest)`` added up by ``rest``."""
    out: dict[tuple, list] = {}
    for (_, *rest), values in rows.items():
        total = out.setdefault(tuple(rest), [0] * len(values))
        for i, v in enumerate(values):
            total[i] += v
    return out


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



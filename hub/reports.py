"""Commissioners' figures: packs per product per machine per day, week, month or financial
year, confirmed and unconfirmed apart, with how much of each period the machine's buckets
cover ("nothing heard" is not "nothing dispensed"); and the packs staff tallied at the
counter, from the van or any other channel (``[tally] channels``), so that the whole service
is in one count. Every count has a channel: ``machine:<id>`` for a machine's, the channel's
name for people's. Nothing finer than a bucket (a machine's, or a tally's hour) exists here
to be shown. Periods are days in the hub's time zone (``[web] timezone``), as the CSV of
docs/hub.md; a bucket belongs to the period its start falls in.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from controller.clock import iso
from hub import humane
from hub.store import HubStore

UTC_ZONE = ZoneInfo("UTC")

KINDS = ("day", "week", "month", "year")
# the reports page has a row per machine up to this many machines; a bigger fleet's is by
# period, each machine's rows in the CSV
BY_MACHINE_AT_MOST = 30


@dataclass
class Period:
    label: str
    start: datetime
    end: datetime
    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # machine->product->[c,u]
    covered: dict[str, float] = field(default_factory=dict)  # machine -> share of the period
    tallied: dict[str, dict[str, int]] = field(default_factory=dict)  # channel->product->packs
    expired: dict[str, int] = field(default_factory=dict)  # product -> packs taken out past date
    fleet: dict[str, list[int]] = field(default_factory=dict)  # product -> [c, u], every machine
    fleet_seconds: float = 0.0  # of the period every machine's buckets cover, added up

    def total(self, product: str | None = None, unconfirmed: bool = False) -> int:
        """Packs of ``product`` (or all), from machines and people (a tallied pack was seen
        given, so it is confirmed)."""
        machines = sum(v[int(unconfirmed)] for p, v in self.fleet.items()
                       if product is None or p == product)
        if unconfirmed:
            return machines
        return machines + sum(n for products in self.tallied.values()
                              for p, n in products.items() if product is None or p == product)

    def machine_total(self, unconfirmed: bool = False) -> int:
        return sum(v[int(unconfirmed)] for v in self.fleet.values())

    def fleet_covered(self, machines: int, now: datetime) -> float:
        """How much of the period (up to ``now``) ``machines`` machines' buckets cover."""
        length = (min(self.end, max(now, self.start)) - self.start).total_seconds()
        return min(1.0, self.fleet_seconds / max(1.0, length * machines)) if machines else 0.0

    def channel_total(self, channel: str) -> int:
        return sum(self.tallied.get(channel, {}).values())


def midnight(d: date, tz: ZoneInfo = UTC_ZONE) -> datetime:
    """The start of day ``d`` in ``tz``, in UTC."""
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


def periods(kind: str, today: date, count: int, fy_start: tuple[int, int] = (4, 1),
            tz: ZoneInfo = UTC_ZONE) -> list[Period]:
    """The last ``count`` periods of ``kind`` up to and including the one holding ``today``
    (a day in ``tz``), oldest first; labels as people write them (``18 Nov``, ``w/c 16 Nov``,
    ``Nov 2026``, ``2026/27``)."""
    out: list[Period] = []
    day_start = functools.partial(midnight, tz=tz)  # a day of tz's start, in UTC
    if kind == "day":
        for i in range(count - 1, -1, -1):
            d = today - timedelta(days=i)
            out.append(Period(humane.short_day(d), day_start(d),
                              day_start(d + timedelta(days=1))))
    elif kind == "week":
        monday = today - timedelta(days=today.weekday())
        for i in range(count - 1, -1, -1):
            d = monday - timedelta(weeks=i)
            out.append(Period(f"w/c {humane.short_day(d)}", day_start(d),
                              day_start(d + timedelta(weeks=1))))
    elif kind == "month":
        year, month = today.year, today.month
        months = []
        for _ in range(count):
            months.append((year, month))
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        for y, m in reversed(months):
            nxt = date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)
            out.append(Period(humane.month(date(y, m, 1)), day_start(date(y, m, 1)),
                              day_start(nxt)))
    elif kind == "year":
        month, day = fy_start
        first = date(today.year, month, day)
        if today < first:
            first = date(today.year - 1, month, day)
        for i in range(count - 1, -1, -1):
            start = date(first.year - i, month, day)
            label = f"{start.year}/{(start.year + 1) % 100:02d}"
            out.append(Period(label, day_start(start), day_start(date(start.year + 1, month, day))))
    else:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    return out


def fill(store: HubStore, spans: list[Period], machines: list[str] | None = None,
         now: datetime | None = None, by_machine: bool = True) -> list[Period]:
    """Count each period's packs and coverage from the store (buckets by their start): the
    whole fleet's (or ``machines``'), and each machine's apart unless ``by_machine`` is
    False. The database adds up each period: what comes back is a row per product (and per
    machine and product when asked), however many days the period holds."""
    now = now or datetime.now(UTC)
    for period in spans:
        start, end = iso(period.start), iso(period.end)
        if by_machine or machines is not None:
            for machine, product, confirmed, unconfirmed in store.usage.period_counts(
                    start, end, machines):
                period.counts.setdefault(machine, {})[product] = [confirmed, unconfirmed]
            length = max(1.0, (min(period.end, max(now, period.start)) - period.start
                               ).total_seconds())
            period.covered = {machine: min(1.0, seconds / length)
                              for machine, seconds in store.usage.period_cover(start, end)
                              if machines is None or machine in machines}
        if machines is None:
            period.fleet = {p: [c, u] for p, c, u in store.usage.fleet_counts(start, end)}
            period.fleet_seconds = store.usage.fleet_cover(start, end)
            for channel, product, packs in store.tallies.totals(start, end)[0]:
                period.tallied.setdefault(channel, {})[product] = packs
            period.expired = dict(store.usage.expired_totals(start, end))
        else:
            for products in period.counts.values():
                for p, (c, u) in products.items():
                    total = period.fleet.setdefault(p, [0, 0])
                    total[0] += c
                    total[1] += u
    return spans


def channel_of(machine: str) -> str:
    """The channel of a machine's counts."""
    return f"machine:{machine}"


def usage_csv(store: HubStore, start: date, end: date, tz: ZoneInfo = UTC_ZONE) -> str:
    """The usage CSV (docs/hub.md): ``machine,product,confirmed,unconfirmed`` (then coverage,
    bucket counts and the channel) for buckets starting in [start, end), days in ``tz``;
    each bucket counted once. A machine's rows have the channel ``machine:<id>``; people's
    (tallied) rows an empty machine, their packs as confirmed, and the channel's name."""
    span = Period("", midnight(start, tz), midnight(end, tz))
    fill(store, [span])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["machine", "product", "confirmed", "unconfirmed", "coverage", "buckets",
                     "channel"])
    for machine, product, confirmed, unconfirmed, buckets in store.usage.usage_totals(
            iso(span.start), iso(span.end)):
        writer.writerow(humane.csv_row([machine, product, confirmed, unconfirmed,
                                        f"{span.covered.get(machine, 0.0):.3f}", buckets,
                                        channel_of(machine)]))
    rows, buckets_of = store.tallies.totals(iso(span.start), iso(span.end))
    for channel, product, packs in rows:
        writer.writerow(humane.csv_row(["", product, packs, 0, "", buckets_of.get(channel, 0),
                                        channel]))
    return out.getvalue()


def bar_chart(spans: list[Period], title: str, channels: tuple[str, ...] = ()) -> str:
    """A bar chart of packs per period, as HTML: the machines' confirmed (solid) and
    unconfirmed (pale), then each of ``channels`` (people's tallies, hatched, one pattern
    each), a row a period with its label and figures as text, split by channel, so it reads
    on a phone, in a screen reader and on paper. Widths are classes (``w-0`` .. ``w-100``):
    no inline style."""
    top = max([p.total() + p.total(unconfirmed=True) for p in spans] + [1])
    rows = [f'<figure class="chart"><figcaption>{escape(title)}</figcaption>']
    if channels:
        keys = "".join(f'<li><span class="key bar-ch-{i % 4}"></span>{escape(c.capitalize())}'
                       "</li>" for i, c in enumerate(channels))
        rows.append('<ul class="chart-key"><li><span class="key bar"></span>Machines</li>'
                    f"{keys}</ul>")
    rows.append("<ol>")
    for p in spans:
        confirmed, unconfirmed = p.machine_total(), p.total(unconfirmed=True)
        parts = [("bar", confirmed), ("bar-unconfirmed", unconfirmed)]
        parts += [(f"bar-ch-{i % 4}", p.channel_total(c)) for i, c in enumerate(channels)]
        used = 0
        bars = []
        for css, n in parts:
            width = min(100 - used, round(100 * n / top))
            if width:
                bars.append(f'<span class="{css} w-{width}"></span>')
                used += width
        figures = humane.number(p.total())
        people = [f"{c} {humane.number(p.channel_total(c))}" for c in channels
                  if p.channel_total(c)]
        if people:  # split by channel when people's counts are in it
            figures += f" (machines {humane.number(confirmed)}, {', '.join(people)})"
        if unconfirmed:
            figures += f" + {humane.number(unconfirmed)} unconfirmed"
        rows.append(f'<li><span class="chart-label">{escape(p.label)}</span>'
                    f'<span class="chart-track" aria-hidden="true">{"".join(bars)}</span>'
                    f'<span class="chart-figure">{figures}</span></li>')
    rows.append("</ol></figure>")
    return "".join(rows)


# -- the coverage figure --------------------------------------------------------------------
# WHO's bands for needle-syringes distributed per person who injects drugs per year (the
# UNAIDS indicator): under 100 low, 100 to 200 medium, over 200 high; the 2030 target is 300.
TARGET_2030 = 300


def who_band(per_person_year: float) -> str:
    """``low`` under 100, ``medium`` 100 to 200, ``high`` over 200."""
    if per_person_year < 100:
        return "low"
    if per_person_year <= 200:
        return "medium"
    return "high"


@dataclass
class Coverage:
    label: str
    start: datetime
    end: datetime
    needles: int  # needle-syringes given out (confirmed packs times each pack's units)
    per_person_year: float
    band: str
    per_injection: float | None  # needle-syringes per injection, where injections are given
    so_far: bool  # a period not yet over: the figure is annualised from its days so far


def coverage(store: HubStore, config: Any, now: datetime, years: int = 3) -> list[Coverage]:
    """Needle-syringes per person who injects drugs per year, for the last 12 months and the
    last ``years`` financial years (``[reports]`` units and people_who_inject; none without
    them), from every channel: machines and people's tallies. Confirmed packs only: an
    unconfirmed pack may not have dropped."""
    people, units = config.people_who_inject, config.units
    if not people or not units:
        return []
    today = now.astimezone(config.tz).date()
    rolling = Period("the last 12 months", now - timedelta(days=365), now)
    spans = [rolling, *reversed(periods("year", today, years, config.financial_year_start,
                                        config.tz))]
    out = []
    for span in spans:
        end = min(span.end, now)
        days = max(1.0, (end - span.start).total_seconds() / 86400)
        needles = sum(confirmed * units.get(product, 0) for product, confirmed, _
                      in store.usage.fleet_counts(iso(span.start), iso(end)))
        needles += sum(packs * units.get(product, 0) for _, product, packs
                       in store.tallies.totals(iso(span.start), iso(end))[0])
        per_year = needles / people * (365 / days if days < 365 else 1)
        per_injection = (needles / (people * config.injections_per_day * days)
                         if config.injections_per_day else None)
        out.append(Coverage(span.label if span is rolling else f"financial year {span.label}",
                            span.start, span.end, needles, round(per_year, 1),
                            who_band(per_year), per_injection, span.end > now))
    return out

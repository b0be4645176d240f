"""Commissioners' figures: packs per product per machine per day, week, month or financial
year, confirmed and unconfirmed apart, with how much of each period the machine's buckets
cover ("nothing heard" is not "nothing dispensed"). Nothing finer than a bucket exists here
to be shown. Periods are UTC dates, as the CSV of docs/hub.md.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape

from controller.clock import iso
from hub.store import HubStore

KINDS = ("day", "week", "month", "year")


@dataclass
class Period:
    label: str
    start: datetime
    end: datetime
    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # machine->product->[c,u]
    covered: dict[str, float] = field(default_factory=dict)  # machine -> share of the period

    def total(self, product: str | None = None, unconfirmed: bool = False) -> int:
        return sum(v[int(unconfirmed)] for products in self.counts.values()
                   for p, v in products.items() if product is None or p == product)


def midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def periods(kind: str, today: date, count: int, fy_start: tuple[int, int] = (4, 1)
            ) -> list[Period]:
    """The last ``count`` periods of ``kind`` up to and including the one holding ``today``,
    oldest first."""
    out: list[Period] = []
    if kind == "day":
        for i in range(count - 1, -1, -1):
            d = today - timedelta(days=i)
            out.append(Period(d.isoformat(), midnight(d), midnight(d + timedelta(days=1))))
    elif kind == "week":
        monday = today - timedelta(days=today.weekday())
        for i in range(count - 1, -1, -1):
            d = monday - timedelta(weeks=i)
            out.append(Period(f"week of {d.isoformat()}", midnight(d),
                              midnight(d + timedelta(weeks=1))))
    elif kind == "month":
        year, month = today.year, today.month
        months = []
        for _ in range(count):
            months.append((year, month))
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        for y, m in reversed(months):
            nxt = date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)
            out.append(Period(f"{y}-{m:02d}", midnight(date(y, m, 1)), midnight(nxt)))
    elif kind == "year":
        month, day = fy_start
        first = date(today.year, month, day)
        if today < first:
            first = date(today.year - 1, month, day)
        for i in range(count - 1, -1, -1):
            start = date(first.year - i, month, day)
            label = f"{start.year}/{(start.year + 1) % 100:02d}"
            out.append(Period(label, midnight(start), midnight(date(start.year + 1, month, day))))
    else:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    return out


def fill(store: HubStore, spans: list[Period], machines: list[str] | None = None,
         now: datetime | None = None) -> list[Period]:
    """Count each period's packs and coverage from the store (buckets by their start day;
    every period here is made of whole UTC days). The database adds up each period: what
    comes back is a row per machine and product, however many days the period holds."""
    now = now or datetime.now(UTC)
    for period in spans:
        start, end = iso(period.start), iso(period.end)
        for machine, product, confirmed, unconfirmed in store.period_counts(start, end, machines):
            period.counts.setdefault(machine, {})[product] = [confirmed, unconfirmed]
        length = max(1.0, (min(period.end, max(now, period.start)) - period.start).total_seconds())
        period.covered = {machine: min(1.0, seconds / length)
                          for machine, seconds in store.period_cover(start, end)
                          if machines is None or machine in machines}
    return spans


def usage_csv(store: HubStore, start: date, end: date) -> str:
    """The usage CSV (docs/hub.md): ``machine,product,confirmed,unconfirmed`` (then coverage and bucket
    counts) for buckets starting in [start, end), UTC dates; each bucket counted once."""
    span = Period("", midnight(start), midnight(end))
    fill(store, [span])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["machine", "product", "confirmed", "unconfirmed", "coverage", "buckets"])
    for machine, product, confirmed, unconfirmed, buckets in store.usage_totals(
            iso(span.start), iso(span.end)):
        writer.writerow([machine, product, confirmed, unconfirmed,
                         f"{span.covered.get(machine, 0.0):.3f}", buckets])
    return out.getvalue()


def nice(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value``."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def bar_chart(spans: list[Period], title: str, width: int = 720, height: int = 240) -> str:
    """An SVG bar chart of confirmed (solid) and unconfirmed (pale) packs per period."""
    top = nice(max([p.total() + p.total(unconfirmed=True) for p in spans] + [1]))
    left, bottom, gap = 48, 36, 4
    inner_w, inner_h = width - left - 8, height - bottom - 24
    bar = max(2.0, inner_w / max(1, len(spans)) - gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}"'
             f' class="chart"><title>{escape(title)}</title>',
             f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>']
    for tick in (0, top / 2, top) if top >= 2 else (0, top):
        y = 24 + inner_h - inner_h * tick / top
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.0f}</text>')
    step = max(1, len(spans) // 8)
    for i, p in enumerate(spans):
        x = left + i * (bar + gap)
        confirmed, unconfirmed = p.total(), p.total(unconfirmed=True)
        h1 = inner_h * confirmed / top
        h2 = inner_h * unconfirmed / top
        y1 = 24 + inner_h - h1
        parts.append(f'<rect x="{x:.1f}" y="{y1:.1f}" width="{bar:.1f}" height="{h1:.1f}" '
                     f'class="bar"><title>{escape(p.label)}: {confirmed} packs'
                     f'{f", {unconfirmed} unconfirmed" if unconfirmed else ""}</title></rect>')
        if h2:
            parts.append(f'<rect x="{x:.1f}" y="{y1 - h2:.1f}" width="{bar:.1f}" '
                         f'height="{h2:.1f}" class="bar-unconfirmed"/>')
        if i % step == 0:
            label = p.label.replace("week of ", "")
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - 14}" text-anchor="middle">'
                         f'{escape(label[-5:] if len(label) > 7 else label)}</text>')
    parts.append("</svg>")
    return "".join(parts)

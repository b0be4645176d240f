"""Words for people: times in the hub's time zone as people write them, numbers with
separators, how long something lasted, products by name and faults in sentences.

Pages and alert messages use these; JSON and CSV keep ISO 8601 UTC and ids.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from controller.clock import parse_iso
from controller.messages import StockMessage


def _moment(moment: str | datetime) -> datetime:
    return parse_iso(moment) if isinstance(moment, str) else moment


def when(moment: str | datetime | None, tz: ZoneInfo, now: datetime | None = None) -> str:
    """``Tue 1 Dec, 02:14`` in ``tz`` (the year too when it is not ``now``'s); ``never``."""
    if not moment:
        return "never"
    local = _moment(moment).astimezone(tz)
    year = "" if now is not None and now.astimezone(tz).year == local.year else f" {local.year}"
    return f"{local:%a} {local.day} {local:%b}{year}, {local:%H:%M}"


def clock(moment: str | datetime, tz: ZoneInfo) -> str:
    """``02:14`` in ``tz``."""
    return f"{_moment(moment).astimezone(tz):%H:%M}"


def day(d: date) -> str:
    """``1 Dec 2026``."""
    return f"{d.day} {d:%b %Y}"


def short_day(d: date) -> str:
    """``18 Nov``: a chart's or a table's day."""
    return f"{d.day} {d:%b}"


def month(d: date) -> str:
    """``Nov 2026``."""
    return f"{d:%b %Y}"


def month_of(expires: str) -> str:
    """A use-by month as people write it: ``2027-03`` -> ``Mar 2027``."""
    try:
        return month(date(int(expires[:4]), int(expires[5:7]), 1))
    except ValueError:
        return expires


def number(n: float | int | None) -> str:
    """``12,345``; a fraction to one place (``2.5``)."""
    if n is None:
        return "—"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.1f}"
    return f"{int(n):,}"


def duration(seconds: float) -> str:
    """How long, in the two largest units: ``45 s``, ``12 min``, ``2 h 5 min``, ``3 days 4 h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    days = f"{d} day" if d == 1 else f"{d} days"
    return f"{days} {h} h" if h else days


def one_line(text: str, limit: int = 160) -> str:
    """``text`` on one line, at most ``limit`` characters (an email subject, a tile)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting ``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return gets a leading ``'`` (numbers are left as they are)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(values: list) -> list:
    return [cell(v) for v in values]


def product_name(stock: StockMessage | None, product: str) -> str:
    """The product's display name as the machine gave it, or its id."""
    p = stock.products.get(product) if stock is not None else None
    return p.name if p is not None and p.name else product


def slot_product(stock: StockMessage | None, slot: int) -> str | None:
    if stock is None:
        return None
    for s in stock.slots:
        if s.slot == slot:
            return s.product
    return None


def slot_words(stock: StockMessage | None, slot: int) -> str:
    """``Slot 1 (1ml syringes)``."""
    product = slot_product(stock, slot)
    return f"Slot {slot} ({product_name(stock, product)})" if product else f"Slot {slot}"


FAULTS = {
    "board_offline": "The dispenser board is not answering",
    "board_fault": "The dispenser board reports impossible things",
    "board_outdated": ("Not serving: the dispenser board's firmware is older than the machine's "
                       "software. At the machine: nspvend board update"),
    "sharps_bin_full": "Sharps bin full",
    "storage_fault": "Cannot write its counts to disk",
    "drop_sensor": "Drop sensor not working (packs given out unconfirmed)",
}
SLOT_FAULTS = {"jam": "jammed"}


def fault_words(fault: str, stock: StockMessage | None) -> str:
    """A ``state`` fault as a sentence: ``slot 1: jam`` -> ``Slot 1 (1ml syringes) jammed``."""
    if fault.startswith("slot ") and ": " in fault:
        number_, what = fault[5:].split(": ", 1)
        if number_.isdigit():
            return f"{slot_words(stock, int(number_))} {SLOT_FAULTS.get(what, what)}"
    return FAULTS.get(fault, fault.replace("_", " ").capitalize())

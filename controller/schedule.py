"""When the hub itself is open, from lines such as ``"Mon-Fri 10:00-16:00"``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^\s*(?P<days>[A-Za-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)


@dataclass(frozen=True)
class Window:
    """Opening hours on some days of the week (0 = Monday), local time."""

    days: frozenset[int]
    start: time
    end: time

    def contains(self, local: datetime) -> bool:
        return local.weekday() in self.days and self.start <= local.time() < self.end


def parse_window(text: str) -> Window:
    """Parse ``"Mon-Fri 10:00-16:00"``, ``"Sat,Sun 12:00-15:00"`` or ``"Daily 9:00-17:00"``.

    Raises ``ValueError`` with a message a person can act on.
    """
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f'"{text}" is not like "Mon-Fri 10:00-16:00"')
    days = _parse_days(match["days"])
    start, end = _parse_time(match["start"]), _parse_time(match["end"])
    if end <= start:
        raise ValueError(f'"{text}": the closing time must be after the opening time')
    return Window(frozenset(days), start, end)


def _parse_days(text: str) -> set[int]:
    text = text.strip().lower()
    if text in ("daily", "every day"):
        return set(range(7))
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        first, _, last = part.partition("-")
        first, last = first.strip()[:3], (last.strip()[:3] or first.strip()[:3])
        if first not in DAYS or last not in DAYS:
            raise ValueError(f'"{part}" is not a day or range of days such as Mon-Fri')
        a, b = DAYS.index(first), DAYS.index(last)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return days


def _parse_time(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    if hours == 24 and minutes == 0:
        return time.max
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f'"{text}" is not a time of day')
    return time(hours, minutes)


def is_open(windows: tuple[Window, ...], local: datetime) -> bool:
    """Whether ``local`` (a local wall-clock time) falls in any opening window."""
    return any(w.contains(local) for w in windows)

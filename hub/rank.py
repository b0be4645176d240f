"""How urgent a machine is, from a summary the store keeps beside its latest words: so that
the fleet board sorts, filters and pages ten thousand machines by reading a few short
columns, and works out the full tile (:func:`hub.board.tile_of`) only for the page shown.

The summary is made as each message is stored: from a state, how urgent the state alone is
and what the machine is doing (:func:`of_state`); from a stock, how urgent the stock alone
is and the first date its packs must be used by (:func:`of_stock`). What depends on the
time (offline, a silence, a date drawing near) is added when the board is drawn, by the
database (:meth:`hub.store.fleet.Fleet.urgencies`). :func:`ranker` says the same rule in
Python: the tests hold it to the tiles' own urgency and state, and the database to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

from controller.clock import iso
from controller.messages import StateMessage, StockMessage
from controller.stock import use_until

# most urgent first: the board's order and each tile's mark
URGENCY = ("offline", "fault", "empty", "door", "low", "ok")
# what the board's "Show" filter offers: a state's words, and which tiles it keeps
SHOW = {
    "": "Every machine",
    "attention": "Needing attention",
    "offline": "Offline",
    "fault": "Faults",
    "empty": "Something empty",
    "door": "Door open or not serving",
    "low": "Running low",
    "ok": "Nothing wrong",
    "outdated": "Needing an update",
}
RELEASE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,5}")  # a release's version: ASCII digits


def of_state(state: StateMessage) -> tuple[int, str]:
    """``(urgency index, look)`` from a machine's state alone: any fault (a jam, storage,
    the board, any new kind) or a full sharps bin is a fault; a door open, out of service
    or being serviced is "door"."""
    if state.faults or state.sharps_bin == "full":
        urgency = "fault"
    elif state.door == "open" or state.mode in ("out_of_service", "service"):
        urgency = "door"
    else:
        urgency = "ok"
    look = "door_open" if state.door == "open" else state.mode
    return URGENCY.index(urgency), look


def of_stock(stock: StockMessage) -> tuple[int, str | None]:
    """``(urgency index, first use-by day)`` from a machine's stock alone: a product with
    none left is "empty", one running low "low"; the day is the earliest end of a slot's
    month among slots holding packs (ISO date), or None."""
    statuses = {p.status for p in stock.products.values()}
    urgency = "empty" if "empty" in statuses else "low" if "low" in statuses else "ok"
    days = [use_until(s.expires) for s in stock.slots if s.expires and s.count > 0]
    return URGENCY.index(urgency), min(days).isoformat() if days else None


def bounds(now: datetime, offline_after_s: int, today: date, expiring_days: int
           ) -> tuple[str, str, str]:
    """``(silent before, past, near)`` as ISO text: a machine last heard at or before the
    first is offline; packs whose use-by day is the second or before are past it, the third
    or before near it."""
    return (iso(now - timedelta(seconds=offline_after_s)), today.isoformat(),
            (today + timedelta(days=expiring_days)).isoformat())


def bounds_of(config: Any, now: datetime) -> tuple[str, str, str]:
    """:func:`bounds` at ``now`` for a :class:`~hub.config.HubConfig`: its offline time, the
    day in its time zone and its notice of dates. The board and the alerts both ask this,
    so that a machine the board finds "ok" is one the alerts have nothing to say of."""
    return bounds(now, config.offline_after_s, now.astimezone(config.tz).date(),
                  config.expiring_days)


def ranker(now: datetime, offline_after_s: int, today: date, expiring_days: int
           ) -> Callable[..., tuple[int, str]]:
    """A function of a machine's summary (as :meth:`hub.store.fleet.Fleet.ranks` gives it:
    availability, last_heard, silence, state_rank, look, stock_rank, use_by) that says its
    ``(urgency index, state)`` as its tile does, at ``now`` (``today`` in the hub's time
    zone). Times and days are compared as ISO text: ten thousand machines in milliseconds
    (:meth:`hub.store.fleet.Fleet.urgencies` is the same, worked out by the database)."""
    silent_before, past, near = bounds(now, offline_after_s, today, expiring_days)
    fault, low, ok = URGENCY.index("fault"), URGENCY.index("low"), len(URGENCY) - 1

    def rank(availability: str | None, last_heard: str | None, silence: str | None,
             state_rank: int | None, look: str | None, stock_rank: int | None,
             use_by: str | None, *versions: Any) -> tuple[int, str]:
        if availability != "online" or (last_heard is not None and last_heard <= silent_before):
            return 0, "offline"
        urgency = ok if state_rank is None else state_rank
        if stock_rank is not None and stock_rank < urgency:
            urgency = stock_rank
        if silence and fault < urgency:
            urgency = fault
        if use_by:
            if use_by <= past and fault < urgency:
                urgency = fault
            elif use_by <= near and low < urgency:
                urgency = low
        return urgency, look if state_rank is not None and look else "unknown"

    return rank


def shows(show: str, urgency: int, outdated: bool = False) -> bool:
    """Whether the board's filter ``show`` (a key of :data:`SHOW`) keeps a tile this urgent
    (``outdated``: its software or board firmware needs updating, see :func:`behind`)."""
    if not show:
        return True
    if show == "attention":
        return URGENCY[urgency] != "ok"
    if show == "outdated":
        return outdated
    return URGENCY[urgency] == show


# -- versions --------------------------------------------------------------------------------
def versions_of(state: StateMessage) -> tuple[str, str | None, int]:
    """``(software version, board firmware version, 1 if the board is too old for the
    software)`` from a machine's state."""
    return state.version, state.board_firmware, int("board_outdated" in state.faults)


def order_key(version: str | None) -> tuple[int, ...] | None:
    """A version as numbers to compare (``0.3.0`` -> (0, 3, 0)); None for one that is not
    digits and dots (a developer's build: never "newest", never "behind")."""
    if not version or not RELEASE.fullmatch(version):
        return None
    return tuple(int(part) for part in version.split("."))


def newest(pairs: Iterable[tuple[str | None, str | None]]) -> tuple[str | None, str | None]:
    """The newest software and board firmware versions among machines'
    ``(version, firmware)``."""
    found: list[str | None] = [None, None]
    for pair in pairs:
        for i, version in enumerate(pair):
            key = order_key(version)
            if key is not None and (found[i] is None or key > order_key(found[i])):
                found[i] = version
    return found[0], found[1]


def behind(version: str | None, firmware: str | None, board_outdated: Any,
           latest: tuple[str | None, str | None]) -> list[str]:
    """What a machine needs updating, in words (empty: nothing): its software behind the
    newest the hub has heard of, its board's firmware behind the newest, or too old for its
    software (the machine cannot serve until it is updated)."""
    out = []
    for what, mine, top in (("Software", version, latest[0]),
                            ("Board firmware", firmware, latest[1])):
        if order_key(mine) is not None and order_key(top) is not None \
                and order_key(mine) < order_key(top):
            out.append(f"{what} {mine}: {top} is out")
    if board_outdated:
        out.append("Board firmware older than its software: run nspvend board update")
    return out

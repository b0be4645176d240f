"""How urgent a machine is, from a summary the store keeps beside its latest words: so that
the fleet board sorts, filters and pages ten thousand machines by reading a few short
columns, and works out the full tile (:func:`hub.board.tile_of`) only for the page shown.

The summary is made as each message is stored: from a state, how urgent the state alone is
and what the machine is doing (:func:`of_state`); from a stock, how urgent the stock alone
is and the first date its packs must be used by (:func:`of_stock`). What depends on the
time (offline, a silence, a date drawing near) is added when the board is drawn
(:func:`ranker`). A test holds it to the tiles' own urgency and state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

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
}
ALERTED_FAULTS = ("storage_fault", "board_fault")


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


def ranker(now: datetime, offline_after_s: int, today: date, expiring_days: int
           ) -> Callable[..., tuple[int, str]]:
    """A function of a machine's summary (as :meth:`hub.store.fleet.Fleet.ranks` gives it:
    availability, last_heard, silence, state_rank, look, stock_rank, use_by) that says its
    ``(urgency index, state)`` as its tile does, at ``now`` (``today`` in the hub's time
    zone). Times and days are compared as ISO text: ten thousand machines in milliseconds."""
    silent_before = iso(now - timedelta(seconds=offline_after_s))
    past = today.isoformat()  # packs whose use-by day has come are past it
    near = (today + timedelta(days=expiring_days)).isoformat()
    fault, low, ok = URGENCY.index("fault"), URGENCY.index("low"), len(URGENCY) - 1

    def rank(availability: str | None, last_heard: str | None, silence: str | None,
             state_rank: int | None, look: str | None, stock_rank: int | None,
             use_by: str | None) -> tuple[int, str]:
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


def shows(show: str, urgency: int) -> bool:
    """Whether the board's filter ``show`` (a key of :data:`SHOW`) keeps a tile this urgent."""
    if not show:
        return True
    if show == "attention":
        return URGENCY[urgency] != "ok"
    return URGENCY[urgency] == show

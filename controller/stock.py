"""Stock rules: a slot's status, which slot serves a product, and the stock report."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from controller.ledger import SlotState
from controller.messages import ProductStock, SlotStock, StockMessage


def slot_status(s: SlotState) -> str:
    """``disabled``, ``fault``, ``empty``, ``low`` or ``ok``, in that order of precedence."""
    if not s.enabled:
        return "disabled"
    if s.fault:
        return "fault"
    if s.count <= 0:
        return "empty"
    if s.count <= s.low_at:
        return "low"
    return "ok"


def healthy(s: SlotState) -> bool:
    return s.enabled and not s.fault


def use_until(expires: str) -> date:
    """The first day a pack marked ``2027-03`` may no longer be used: 1 Apr 2027 (a month on
    a pack means to the end of that month)."""
    year, month = int(expires[:4]), int(expires[5:7])
    return date(year + month // 12, month % 12 + 1, 1)


def expired(s: SlotState, today: date | None) -> bool:
    """Whether ``s``'s packs are past their date on ``today`` (never, without a date)."""
    return bool(s.expires) and today is not None and today >= use_until(s.expires)


def choose_slot(
    slots: Iterable[SlotState], product: str, exclude: set[int] = frozenset(),
    today: date | None = None,
) -> SlotState | None:
    """The slot to turn for ``product``: of the healthy slots holding packs, one in date
    before one past its date (``today``), the soonest to expire first (undated last), then
    the fullest, the lowest number on a tie. A slot past its date is turned only when no
    slot in date holds a pack: the client still gets one (access first; the hub tells staff).

    When every healthy slot is counted empty, the lowest-numbered one is still
    returned: staff counts can be wrong, and a turn that drops a pack is a client
    served (access first). The caller treats nothing dropping there as empty, not a
    jam, and marks the slot ``known_empty``: it is not turned again until someone
    could have put packs in (a refill, a cleared fault, the door opened and shut).
    """
    candidates = [s for s in slots if s.product == product and healthy(s)
                  and not s.known_empty and s.slot not in exclude]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (s.count <= 0, expired(s, today),
                                          s.expires or "9999-99", -s.count, s.slot))


def product_summary(slots: Iterable[SlotState], products: Iterable[str]) -> dict[str, dict]:
    """Per product: packs in healthy slots and one status for the whole product."""
    slots = list(slots)
    summary: dict[str, dict] = {}
    for product in products:
        mine = [s for s in slots if s.product == product]
        serving = [s for s in mine if healthy(s)]
        count = sum(s.count for s in serving)
        if not serving:
            status = "fault" if any(s.fault for s in mine if s.enabled) else (
                "disabled" if mine else "empty")
        elif count <= 0:
            status = "empty"
        elif count <= sum(s.low_at for s in serving):
            status = "low"
        else:
            status = "ok"
        summary[product] = {"count": count, "status": status}
    return summary


def stock_message(slots: Iterable[SlotState], products: Iterable[str], ts: str,
                  names: dict[str, str] | None = None,
                  shelf_lives: dict[str, int] | None = None) -> StockMessage:
    """The ``stock`` message for these slots (``names``: each product's display name;
    ``shelf_lives``: a fresh pack's life in months, where configured)."""
    slots = sorted(slots, key=lambda s: s.slot)
    return StockMessage(
        ts=ts,
        slots=tuple(SlotStock(s.slot, s.product, s.count, s.capacity, s.low_at, slot_status(s),
                              s.expires) for s in slots),
        products={p: ProductStock(**v, name=(names or {}).get(p),
                                  shelf_life_months=(shelf_lives or {}).get(p))
                  for p, v in product_summary(slots, products).items()},
    )

"""What the fleet board and the pick list say of each machine, worked out from what the hub
last heard: its state (offline, door open, out of service, in service), what is wrong in
words with the product, each product's packs against its capacity, how many days until it
runs out, and who is on an alert. The alerts are raised from the same words
(:func:`hub.alerts.conditions_of`), so the board and the messages agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from controller.clock import iso
from controller.messages import SlotStock, StockMessage
from controller.stock import use_until
from hub import humane
from hub.alerts import conditions_of, date_state
from hub.config import HubConfig, MachineInfo
from hub.rank import SHOW, URGENCY, behind, bounds_of, shows
from hub.store import HubStore, Machine

__all__ = ["SHOW", "URGENCY"]

STATES = {
    "never": "Never heard",
    "offline": "Offline",
    "door_open": "Door open",
    "out_of_service": "Out of service",
    "service": "Being serviced",
    "in_service": "In service",
    "unknown": "Heard, state not told yet",
}
LEVEL = {"offline": "offline", "silence": "fault", "jam": "fault", "storage_fault": "fault",
         "board_fault": "fault", "board_outdated": "fault", "sharps_bin_full": "fault", "door_open": "door",
         "empty": "empty", "low_stock": "low", "expired": "fault", "expiring": "low"}
# faults said through an alert's words already; any other (a new kind too) is said as it is
ALERTED = ("storage_fault", "board_fault", "board_outdated", "sharps_bin_full")
SLOT_WORDS = {"ok": "", "low": "Low", "empty": "None left", "fault": "Jammed",
              "disabled": "Disabled"}
RATE_DAYS = 7


@dataclass
class Problem:
    text: str
    level: str  # an URGENCY
    key: tuple[str, str, str] | None = None  # the alert it raises
    on_it: str | None = None  # who acknowledged that alert


@dataclass
class ProductLine:
    id: str
    name: str
    count: int
    capacity: int
    status: str
    days: float | None

    @property
    def percent(self) -> int:
        return 0 if self.capacity <= 0 else max(0, min(100, round(100 * self.count /
                                                                  self.capacity)))

    @property
    def words(self) -> str:
        return SLOT_WORDS.get(self.status, self.status)


@dataclass
class Tile:
    id: str
    name: str
    place: str | None
    area: str | None
    state: str
    urgency: str
    last_heard: str | None
    last_pack: str | None
    temperature_c: float | None
    mode: str | None
    door: str | None
    sharps_bin: str | None
    problems: list[Problem] = field(default_factory=list)
    products: list[ProductLine] = field(default_factory=list)
    stock_at: str | None = None
    version: str | None = None  # its software's
    firmware: str | None = None  # its dispenser board's
    updates: list[str] = field(default_factory=list)  # what needs updating, in words

    @property
    def online(self) -> bool:
        return self.state not in ("offline", "never")

    @property
    def state_words(self) -> str:
        return STATES[self.state]

    @property
    def faults(self) -> list[str]:
        return [p.text for p in self.problems if p.level == "fault"]

    @property
    def say(self) -> str:
        """What a screen reader is told when it changes: the state and the problems."""
        return "; ".join([self.state_words] + [p.text for p in self.problems])


def tile_of(config: HubConfig, store: HubStore, m: Machine | None, mid: str, now: datetime,
            last_pack: str | None, acknowledged: dict,
            latest: tuple[str | None, str | None] = (None, None)) -> Tile:
    """One machine's tile; its products' days until empty are left to :func:`with_days` (a
    query a machine: the board asks it for the tiles it shows only)."""
    info = config.machines.get(mid)
    name = info.name if info else mid
    place, area = (info.place, info.area) if info else (None, None)
    if m is None:
        return Tile(mid, name, place, area, "never", "offline", None, None, None, None, None,
                    None)
    state, stock = m.state, m.stock
    problems = []
    conditions = conditions_of(m, now, config.offline_after_s, config.tz, config.expiring_days)
    past = {subject for _, kind, subject, _ in conditions if kind == "expired"}
    for _, kind, subject, detail in conditions:
        if kind == "expiring" and subject in past:
            continue  # "past its date" says it: "near it" too would be said twice
        key = (mid, kind, subject)
        who = acknowledged.get(key)
        problems.append(Problem(detail, LEVEL.get(kind, "fault"), key, who[0] if who else None))
    for fault in state.faults if state else ():
        if fault not in ALERTED and not (fault.startswith("slot ") and fault.endswith(": jam")):
            problems.append(Problem(humane.fault_words(fault, stock), "fault"))
    offline = any(p.level == "offline" for p in problems) or m.availability != "online"
    if offline and not any(p.level == "offline" for p in problems):
        problems.insert(0, Problem(f"Offline: nothing heard since "
                                   f"{humane.when(m.last_heard, config.tz, now)}", "offline"))
    if offline:
        look = "offline"
    elif state is not None and state.door == "open":
        look = "door_open"
    elif state is not None:
        look = state.mode
    else:
        look = "unknown"
    urgency = min((p.level for p in problems), key=URGENCY.index, default="ok")
    if look in ("out_of_service", "service") and URGENCY.index(urgency) > URGENCY.index("door"):
        urgency = "door"  # not serving clients: above a low product
    products = []
    if stock is not None:
        for pid, p in stock.products.items():
            capacity = sum(s.capacity for s in stock.slots
                           if s.product == pid and s.status != "disabled")
            products.append(ProductLine(pid, humane.product_name(stock, pid), p.count,
                                        capacity, p.status, None))
    version = state.version if state else None
    firmware = state.board_firmware if state else None
    updates = behind(version, firmware, state and "board_outdated" in state.faults, latest)
    return Tile(mid, name, place, area, look, urgency, m.last_heard, last_pack,
                state.temperature_c if state else None, state.mode if state else None,
                state.door if state else None, state.sharps_bin if state else None,
                problems, products, m.stock_at, version, firmware, updates)


def days_left(count: int, recent: tuple[int, float] | None) -> float | None:
    """Days until ``count`` packs run out at the rate of ``recent`` (packs, bucket hours)."""
    if not recent or not recent[1] or not recent[0]:
        return None
    return round(count / (recent[0] / recent[1] * 24), 1)


PER_PAGE = 60  # tiles on one page of the board


def order(config: HubConfig, store: HubStore, now: datetime, area: str | None = None,
          show: str = "", search: str = "") -> list[str]:
    """The ids of the machines the board shows, most urgent first, then by name: those of
    ``area``, those ``show`` keeps (a key of :data:`hub.rank.SHOW`), those whose id, name,
    place or area holds ``search`` (any case). From the store's short summary of each
    machine (:mod:`hub.rank`), its urgency worked out by the database: fast whatever the
    fleet."""
    return _ordered(config, store, now, area, show, search)[0]


def _ordered(config: HubConfig, store: HubStore, now: datetime, area: str | None, show: str,
             search: str) -> tuple[list[str], tuple[str | None, str | None]]:
    """:func:`order`'s ids, and the newest versions the machines say."""
    urgent = store.fleet.urgencies(*bounds_of(config, now))
    urgency = urgent.by_id.get
    versions = store.fleet.versions() if show == "outdated" else {}
    wanted = search.strip().casefold()
    kept = []
    for mid, info, words in _by_name(config).machines:
        if area and info.area != area or wanted and not any(wanted in w for w in words):
            continue
        if show and not shows(show, urgency(mid, 0),  # never heard: offline
                              mid in versions and bool(behind(*versions[mid], urgent.newest))):
            continue
        kept.append(mid)
    # sorted by name already: a stable sort by urgency keeps that order within each
    return sorted(kept, key=lambda mid: urgency(mid, 0)), urgent.newest


@dataclass(frozen=True)
class _Names:
    """The hub's machines in the board's order within an urgency (by name in any case, then
    id), each with the words a search looks in; and the areas they are in."""

    known: dict
    machines: list[tuple[str, MachineInfo, tuple[str, ...]]]
    areas: list[str]


_names = _Names({}, [], [])


def _by_name(config: HubConfig) -> _Names:
    """:class:`_Names` of ``config``'s machines, sorted again only when they change
    (:class:`hub.enrol.Directory` swaps ``config.machines`` whole): ten thousand names are
    not sorted for every page."""
    global _names
    names = _names
    if names.known is not config.machines:
        known = config.machines
        machines = sorted(((mid, info, tuple((x or "").casefold() for x in
                                             (mid, info.name, info.place, info.area)))
                           for mid, info in known.items()),
                          key=lambda row: (row[1].name.casefold(), row[0]))
        names = _names = _Names(known, machines,
                                sorted({info.area for info in known.values() if info.area}))
    return names


def tiles_of(config: HubConfig, store: HubStore, now: datetime, ids: list[str],
             latest: tuple[str | None, str | None] | None = None) -> list[Tile]:
    """The tiles of the machines ``ids``, in that order: each one's words read and worked out
    (its products' days until empty are left to :func:`with_days`), and what of it is behind
    the newest versions the hub has heard of (``latest``, read if not given)."""
    machines = {m.id: m for m in store.fleet.machines(set(ids))} if ids else {}
    acknowledged = store.alerts.acknowledged()
    if latest is None:
        latest = store.fleet.newest() if ids else (None, None)
    out = []
    for mid in ids:
        m = machines.get(mid)
        out.append(tile_of(config, store, m, mid, now, m.last_pack if m else None, acknowledged,
                           latest))
    return out


def tiles(config: HubConfig, store: HubStore, now: datetime, area: str | None = None
          ) -> list[Tile]:
    """One tile per machine the hub knows, most urgent first (``area``: that area's)."""
    return tiles_of(config, store, now, order(config, store, now, area))


def tiles_by_id(config: HubConfig, store: HubStore, now: datetime, after: str, limit: int
                ) -> tuple[list[Tile], bool]:
    """The tiles of the first ``limit`` machines the hub knows whose id sorts after
    ``after``, by id, and whether more follow: only those are worked out, whatever the
    fleet (the JSON API's pages)."""
    ids = sorted(mid for mid in config.machines if mid > after)
    return tiles_of(config, store, now, ids[:limit]), len(ids) > limit


@dataclass
class Page:
    """A page of the board: its tiles, which page of how many, and how many machines the
    filters kept (of how many the hub knows)."""

    tiles: list[Tile]
    page: int
    pages: int
    kept: int
    known: int


def page_of(config: HubConfig, store: HubStore, now: datetime, area: str | None, page: int,
            show: str = "", search: str = "") -> Page:
    """The board's ``page`` of the machines the filters keep (see :func:`order`): only its
    tiles are worked out, with days until empty."""
    ids, latest = _ordered(config, store, now, area, show, search)
    pages = max(1, -(-len(ids) // PER_PAGE))
    page = min(max(1, page), pages)
    chosen = ids[(page - 1) * PER_PAGE:page * PER_PAGE]
    shown = with_days(store, tiles_of(config, store, now, chosen, latest), now)
    return Page(shown, page, pages, len(ids), len(config.machines))


def with_days(store: HubStore, shown: list[Tile], now: datetime) -> list[Tile]:
    """``shown``, each product with its days until empty at the rate of the last 7 days
    (the UTC days from the one 7 days ago)."""
    since = iso(now - timedelta(days=RATE_DAYS))
    rates = store.usage.recent_usage([t.id for t in shown if t.products], since)
    for t in shown:
        for p in t.products:
            p.days = days_left(p.count, rates.get(t.id, {}).get(p.id))
    return shown


def areas(config: HubConfig) -> list[str]:
    return _by_name(config).areas


# -- the pick list -------------------------------------------------------------------------
PICK_ORDER = ("fault", "disabled", "empty", "low", "ok")
PICK_WORDS = {"fault": "Jammed: clear it", "disabled": "Disabled: check it",
              "empty": "Empty", "low": "Low", "ok": ""}


@dataclass
class PickRow:
    machine: str
    name: str
    slot: int
    product: str
    product_name: str
    count: int
    capacity: int
    status: str
    need: int
    days: float | None
    stock_at: str | None
    expires: str | None = None
    dated: str = ""  # "expired" or "expiring": empty it and refill with fresh packs

    @property
    def words(self) -> str:
        said = PICK_WORDS.get(self.status, self.status)
        if self.dated and self.expires:
            when = humane.month_of(self.expires)
            fresh = (f"past its date ({when}): empty it and refill with fresh packs"
                     if self.dated == "expired" else
                     f"use by end of {when}: empty it and refill with fresh packs")
            return f"{said}; {fresh}" if said else fresh[:1].upper() + fresh[1:]
        return said

    @property
    def order(self) -> int:
        """Jammed and disabled first, then past its date, empty, near its date, low, OK."""
        if self.status in ("fault", "disabled"):
            return PICK_ORDER.index(self.status)
        if self.dated == "expired":
            return 2
        if self.status == "empty":
            return 3
        if self.dated == "expiring":
            return 4
        return 5 + (PICK_ORDER.index(self.status) if self.status in PICK_ORDER else 0)


@dataclass(frozen=True)
class SlotDate:
    """Where a slot's packs stand against their date, for a person."""

    state: str  # "expired", "expiring" or "" (in date, or no date, or no packs)
    words: str  # "Mar 2027", "Mar 2027: past its date", "Mar 2027: 12 days left"
    suggest: str  # the month to put on a refill now: shelf life from today, else its own


def slot_date(stock: StockMessage, s: SlotStock, today: date, expiring_days: int) -> SlotDate:
    """``s``'s date in words, whether it is past or near it, and the use-by month a refill
    now would suggest (the product's shelf life from this month, where the machine has one)."""
    product = stock.products.get(s.product)
    life = product.shelf_life_months if product else None
    months = today.year * 12 + today.month - 1 + (life or 0)
    suggest = f"{months // 12:04d}-{months % 12 + 1:02d}" if life else ""
    if not s.expires:
        return SlotDate("", "", suggest)
    until = use_until(s.expires)
    shown = humane.month_of(s.expires)
    if s.count <= 0:  # the dated packs are gone: the date was theirs
        return SlotDate("", "", suggest)
    if not suggest and today < until:
        suggest = s.expires
    state = date_state(s, today, expiring_days)
    if state == "expired":
        return SlotDate(state, f"{shown}: past its date", suggest)
    if state == "expiring":
        left = (until - today).days
        return SlotDate(state, f"{shown}: {left} day{'' if left == 1 else 's'} left", suggest)
    return SlotDate("", shown, suggest)


def pick_list(config: HubConfig, store: HubStore, now: datetime, chosen: list[str] | None
              ) -> tuple[list[PickRow], list[tuple[str, int]]]:
    """Per machine and slot what to bring (capacity - count; none for a disabled slot), most
    urgent first (a jammed or disabled slot, empty, low, then fewest days left), and the
    packs to bring per product name for the machines chosen."""
    rows = []
    since = iso(now - timedelta(days=RATE_DAYS))
    today = now.astimezone(config.tz).date()
    machines = [m for m in store.fleet.machines(set(chosen) if chosen else None)
                if m.stock is not None]
    every_rate = store.usage.recent_usage([m.id for m in machines], since)
    for m in machines:
        rates = every_rate.get(m.id, {})
        for s in m.stock.slots:
            product = m.stock.products.get(s.product)
            dated = slot_date(m.stock, s, today, config.expiring_days)
            need = max(0, s.capacity - s.count) if s.status != "disabled" else 0
            if dated.state and s.status != "disabled":
                need = s.capacity  # its packs come out: a slot's worth of fresh ones
            rows.append(PickRow(m.id, config.name_of(m.id), s.slot, s.product,
                                humane.product_name(m.stock, s.product), s.count, s.capacity,
                                s.status, need, days_left(product.count if product else s.count,
                                                          rates.get(s.product)), m.stock_at,
                                s.expires if s.count > 0 else None, dated.state))
    rows.sort(key=lambda r: (r.order, r.days if r.days is not None else float("inf"), -r.need,
                             r.name.casefold(), r.slot))
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.product_name] = totals.get(r.product_name, 0) + r.need
    return rows, sorted(totals.items(), key=lambda kv: kv[0].casefold())


def current_messages(store: HubStore, mid: str) -> list[str] | None:
    """The signposting messages staff last set on ``mid`` from the hub (None: never)."""
    for c in store.commands.recent(mid, 200):
        if c["command"].get("cmd") == "set_messages" and c["ok"]:
            answer = c["answer"] or {}
            result = answer.get("result") if isinstance(answer, dict) else None
            if isinstance(result, dict) and isinstance(result.get("messages"), list):
                return [str(x) for x in result["messages"]]
            return [str(x) for x in c["command"].get("messages", [])]
    return None


def expires_clock(config: HubConfig, now: datetime) -> str:
    """Until when a command sent now waits for its machine: ``Tue 1 Dec, 14:22``."""
    return humane.when(now + timedelta(seconds=config.command_expires_s), config.tz, now)

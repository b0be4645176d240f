"""Staff commands, the same from the control socket and from the hub.

A request is ``{"id": "...", "cmd": NAME, ...args}``. Anything malformed is
answered ``{"id", "ok": false, "error": "FIELD: what is wrong"}`` and changes
nothing. A command that changes the machine runs at most once per id: a replay
gets the first answer again. A request whose ``expires`` has passed is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.clock import iso, parse_iso
from controller.ledger import Event, SlotState, StorageError

if TYPE_CHECKING:
    from controller.vending import VendingMachine

log = logging.getLogger(__name__)

MAX_ID = 128
MAX_MESSAGES = 20
MAX_MESSAGE_CHARS = 200
COMMON = {"id", "cmd", "expires"}


class BadCommand(Exception):
    """A request that cannot be run; ``str()`` names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


class _Args:
    """The arguments of one request, taken one by one and checked."""

    def __init__(self, request: dict) -> None:
        self.request = request
        self.used = set(COMMON)

    def has(self, name: str) -> bool:
        return name in self.request

    def integer(self, name: str, low: int, high: int, what: str | None = None) -> int:
        self.used.add(name)
        if name not in self.request:
            raise BadCommand(name, "is missing")
        value = self.request[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadCommand(name, f"must be {what or f'a whole number from {low} to {high}'}")
        if not low <= value <= high:
            raise BadCommand(name, f"must be {what or f'a whole number from {low} to {high}'}, "
                                   f"not {value}")
        return value

    def text(self, name: str, choices: Any = None) -> str:
        self.used.add(name)
        value = self.request.get(name)
        if not isinstance(value, str) or not value:
            raise BadCommand(name, "is missing" if name not in self.request else "must be a string")
        if choices is not None and value not in choices:
            raise BadCommand(name, f"must be one of {', '.join(sorted(choices))}, not {value!r}")
        return value

    def flag(self, name: str) -> bool:
        self.used.add(name)
        value = self.request.get(name, False)
        if not isinstance(value, bool):
            raise BadCommand(name, "must be true or false")
        return value

    def done(self) -> None:
        for name in self.request:
            if name not in self.used:
                raise BadCommand(str(name)[:40], "is not an argument of this command")


def run_command(vm: VendingMachine, request: Any) -> dict:
    """Check and run one request against ``vm``; always returns an answer, never raises."""
    command_id = request.get("id") if isinstance(request, dict) else None
    if not isinstance(command_id, str):
        command_id = None
    try:
        if not isinstance(request, dict):
            raise BadCommand("request", "must be a JSON object")
        if "id" not in request:
            raise BadCommand("id", "is missing")
        if command_id is None or not command_id or len(command_id) > MAX_ID:
            raise BadCommand("id", f"must be a string of 1 to {MAX_ID} characters")
        name = request.get("cmd")
        if not isinstance(name, str) or name not in COMMANDS:
            raise BadCommand("cmd", "must be one of " + ", ".join(sorted(COMMANDS)))
        handler, changes = COMMANDS[name]
        if changes:
            earlier = vm.ledger.command_result(command_id)
            if earlier is not None:
                return earlier
        _check_expiry(vm, request)
        args = _Args(request)
        apply = handler(vm, args)
        args.done()
    except BadCommand as e:
        return {"id": command_id, "ok": False, "error": str(e)}
    answer = {"id": command_id, "ok": True, "result": None}
    if not changes:
        answer["result"] = apply(vm.clock.now())
        return answer

    saved = (dict(vm.slots), vm.staff_mode, list(vm.messages))
    try:
        vm._flush_unsaved()
        if vm._unsaved:
            raise StorageError(vm.storage_fault or "earlier changes are not saved yet")
        now = vm.clock.now()
        with vm.ledger.transaction():
            answer["result"] = apply(now)
            vm.ledger.remember_command(command_id, answer, now)
    except StorageError as e:
        vm.slots, vm.staff_mode, vm.messages = saved
        vm._storage_failed(e)
        return {"id": command_id, "ok": False,
                "error": f"storage: cannot save the change ({e}); nothing was changed"}
    log.info("command %s (%s) done", name, command_id)
    if vm.screen in ("idle", "service", "out_of_service"):
        vm._show_rest_screen()
    vm.on_change("stock_urgent")
    vm.on_change("state")
    vm.on_change("outbox")
    return answer


def _check_expiry(vm: VendingMachine, request: dict) -> None:
    if "expires" not in request:
        return
    value = request["expires"]
    try:
        expires = parse_iso(value) if isinstance(value, str) else None
    except ValueError:
        expires = None
    if expires is None:
        raise BadCommand("expires", "must be an ISO 8601 time such as 2026-11-25T03:00:00Z")
    if expires <= vm.clock.now():
        raise BadCommand("expires", f"the command expired at {iso(expires)}; nothing was done")


Apply = Callable[[datetime], Any]


def _slot(vm: VendingMachine, args: _Args) -> SlotState:
    numbers = sorted(vm.slots)
    number = args.integer("slot", 1, 10**6, f"one of the slot numbers {numbers[0]}..{numbers[-1]}")
    if number not in vm.slots:
        raise BadCommand("slot", f"there is no slot {number}; slots are {numbers[0]}..{numbers[-1]}")
    return vm.slots[number]


def _save(vm: VendingMachine, slot: SlotState, now: datetime, event: Event) -> dict:
    vm.slots[slot.slot] = slot
    vm.ledger.save_slot(slot)
    vm.ledger.add_event(event, now)
    return {"slot": slot.slot, "product": slot.product, "count": slot.count,
            "capacity": slot.capacity, "low_at": slot.low_at}


def _refill(vm: VendingMachine, args: _Args) -> Apply:
    if args.flag("all"):
        if args.has("slot") or args.has("count"):
            raise BadCommand("all", "cannot be given with slot or count")
        targets = [replace(s, count=s.capacity, known_empty=False) for s in vm.slots.values()]
    else:
        slot = _slot(vm, args)
        count = args.integer("count", 0, slot.capacity,
                             f"the packs now in slot {slot.slot}, 0 to {slot.capacity}")
        targets = [replace(slot, count=count, known_empty=False)]

    def apply(now: datetime) -> Any:
        done = [_save(vm, s, now, Event("refilled", s.slot, s.product, f"count {s.count}"))
                for s in targets]
        return {"slots": done}

    return apply


def _configure_slot(vm: VendingMachine, args: _Args) -> Apply:
    slot = _slot(vm, args)
    product = args.text("product", vm.products) if args.has("product") else slot.product
    capacity = args.integer("capacity", 1, 1000) if args.has("capacity") else slot.capacity
    low_at = (args.integer("low_at", 0, capacity, f"a whole number from 0 to {capacity}")
              if args.has("low_at") else min(slot.low_at, capacity))
    count = 0 if product != slot.product else slot.count
    if count > capacity:
        raise BadCommand("capacity", f"{capacity} is less than the {count} packs in slot "
                                     f"{slot.slot}; refill it with fewer first")
    new = replace(slot, product=product, capacity=capacity, low_at=low_at, count=count,
                  known_empty=False)
    return lambda now: _save(vm, new, now, Event(
        "slot_configured", new.slot, new.product, f"capacity {capacity}, low at {low_at}"))


def _enable(vm: VendingMachine, args: _Args) -> Apply:
    new = replace(_slot(vm, args), enabled=True)
    return lambda now: _save(vm, new, now, Event("slot_enabled", new.slot, new.product))


def _disable(vm: VendingMachine, args: _Args) -> Apply:
    new = replace(_slot(vm, args), enabled=False)
    return lambda now: _save(vm, new, now, Event("slot_disabled", new.slot, new.product))


def _clear_fault(vm: VendingMachine, args: _Args) -> Apply:
    old = _slot(vm, args)
    new = replace(old, fault=None, known_empty=False)
    return lambda now: _save(vm, new, now, Event("fault_cleared", new.slot, new.product,
                                                 f"was: {old.fault}" if old.fault else None))


def _set_mode(vm: VendingMachine, args: _Args) -> Apply:
    from controller.vending import MODES

    mode = args.text("mode", MODES)

    def apply(now: datetime) -> Any:
        vm.staff_mode = mode
        vm.ledger.set_meta("mode", mode)
        vm.ledger.add_event(Event("mode_changed", detail=mode), now)
        return {"mode": vm.mode}

    return apply


def _set_messages(vm: VendingMachine, args: _Args) -> Apply:
    args.used.add("messages")
    messages = args.request.get("messages")
    if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
        raise BadCommand("messages", f"must be a list of at most {MAX_MESSAGES} strings")
    for i, m in enumerate(messages):
        if not isinstance(m, str) or not m.strip() or len(m) > MAX_MESSAGE_CHARS:
            raise BadCommand(f"messages[{i}]",
                             f"must be a non-empty string of at most {MAX_MESSAGE_CHARS} characters")

    def apply(now: datetime) -> Any:
        vm.messages = list(messages)
        vm.ledger.set_meta("messages", messages)
        vm.ledger.add_event(Event("messages_changed", detail=f"{len(messages)} messages"), now)
        return {"messages": messages}

    return apply


def _status(vm: VendingMachine, args: _Args) -> Apply:
    def apply(now: datetime) -> Any:
        vm.on_change("status")
        return {"state": vm.state_report(), "stock": vm.stock_report(),
                "outbox": vm.ledger.outbox_size(), "open_vends": len(vm.ledger.open_vends()),
                "hub_open": vm.hub_open(), "screen": vm.screen}

    return apply


def _stock(vm: VendingMachine, args: _Args) -> Apply:
    return lambda now: vm.stock_report()


def _usage(vm: VendingMachine, args: _Args) -> Apply:
    bounds = {}
    for name in ("since", "until"):
        args.used.add(name)
        if name in args.request:
            value = args.request[name]
            try:
                bounds[name] = iso(parse_iso(value)) if isinstance(value, str) else None
            except ValueError:
                bounds[name] = None
            if bounds[name] is None:
                raise BadCommand(name, "must be a date or time such as 2026-11-01")
    return lambda now: {"buckets": vm.ledger.usage(bounds.get("since"), bounds.get("until")),
                        "totals": vm.ledger.totals()}


def _events(vm: VendingMachine, args: _Args) -> Apply:
    limit = args.integer("limit", 1, 500) if args.has("limit") else 20
    return lambda now: {"events": vm.ledger.events(limit)}


# name -> (handler, whether it changes the machine)
COMMANDS: dict[str, tuple[Callable[[VendingMachine, _Args], Apply], bool]] = {
    "refill": (_refill, True),
    "configure_slot": (_configure_slot, True),
    "enable": (_enable, True),
    "disable": (_disable, True),
    "clear_fault": (_clear_fault, True),
    "set_mode": (_set_mode, True),
    "set_messages": (_set_messages, True),
    "status": (_status, False),
    "stock": (_stock, False),
    "usage": (_usage, False),
    "events": (_events, False),
}

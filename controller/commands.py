"""Staff commands, the same from the control socket and from the hub.

A request is ``{"id": "...", "cmd": NAME, ...args}``. Anything malformed is
answered ``{"id", "ok": false, "error": "FIELD: what is wrong"}`` and changes
nothing. A command that changes the machine runs at most once per id: a replay
gets the first answer again, for as long as the command could be valid (until its
``expires``). A request whose ``expires`` has passed, or lies further ahead than
``mqtt.command_max_age_s``, is refused. With ``mqtt.command_key_file`` set, a
command from the hub must be signed (``sig``, see :mod:`controller.messages`).

What a command answers depends on who asks: staff at the machine see live stock;
the hub sees what has been published, never a live count or the client's screen
(promise 2), and neither sees the open bucket's counts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.clock import iso, parse_iso
from controller.ledger import COMMAND_MEMORY_LIMIT, Event, SlotState, StorageError
from controller.messages import MODES, MONTH, Mode, answer, read_key, refusal, signature_ok

if TYPE_CHECKING:
    from controller.vending import VendingMachine

log = logging.getLogger(__name__)

MAX_ID = 128
MAX_MESSAGES = 20
MAX_MESSAGE_CHARS = 200
COMMON = {"id", "cmd", "expires", "sig"}
DEFAULT_MAX_AGE_S = 86400


@dataclass
class Command:
    """A staff command (control socket or hub), answered through ``reply``."""

    request: Any
    reply: Callable[[dict], None] | None = None
    origin: str = "local"  # "local": the control socket; "hub": MQTT


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


def run_command(vm: VendingMachine, request: Any, origin: str = "local") -> dict:
    """Check and run one request against ``vm`` for ``origin`` (``"local"``: the control
    socket; ``"hub"``: MQTT); always returns an answer, never raises."""
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
        key = _command_key(vm) if origin == "hub" else None
        if key is not None and not signature_ok(request, key):
            raise BadCommand("sig", "missing or wrong: commands from the hub must be signed "
                                    "with this machine's command key")
        name = request.get("cmd")
        if not isinstance(name, str) or name not in COMMANDS:
            raise BadCommand("cmd", "must be one of " + ", ".join(sorted(COMMANDS)))
        handler, changes = COMMANDS[name]
        if changes:
            earlier = vm.ledger.command_result(command_id)
            if earlier is not None:
                return earlier
        forget_after = _check_expiry(vm, request, required=key is not None)
        args = _Args(request)
        apply = handler(vm, args, origin)
        args.done()
        if changes and vm.ledger.commands_remembered() >= COMMAND_MEMORY_LIMIT:
            vm.writes.write(lambda now: vm.ledger.forget_commands(now))
            if vm.ledger.commands_remembered() >= COMMAND_MEMORY_LIMIT:
                raise BadCommand("id", f"{COMMAND_MEMORY_LIMIT} commands are remembered and "
                                       "none has expired yet; try again later")
    except BadCommand as e:
        return refusal(command_id, str(e))
    if not changes:
        return answer(command_id, apply(vm.clock.now()))

    def change(now: datetime) -> dict:
        vm.ledger.forget_commands(now)
        done = answer(command_id, apply(now))
        vm.ledger.remember_command(command_id, done, forget_after)
        return done

    try:
        done = vm.staff_change(change)
    except StorageError as e:
        return refusal(command_id, f"storage: cannot save the change ({e}); nothing was changed")
    log.info("command %s (%s) done", name, command_id)
    return done


@functools.lru_cache(maxsize=4)
def _read_key(path: str) -> str:
    return read_key(path)


def _command_key(vm: VendingMachine) -> str | None:
    mqtt = vm.config.mqtt
    if mqtt is None or not mqtt.command_key_file:
        return None
    try:
        return _read_key(mqtt.command_key_file)
    except (OSError, ValueError) as e:
        # checked at start-up: gone since. Refuse rather than run unsigned commands.
        raise BadCommand("sig", f"this machine cannot read its command key ({e})") from None


def _max_age(vm: VendingMachine) -> int:
    return vm.config.mqtt.command_max_age_s if vm.config.mqtt else DEFAULT_MAX_AGE_S


def _check_expiry(vm: VendingMachine, request: dict, required: bool) -> datetime:
    """Check ``expires``; return when the command's id may be forgotten."""
    now = vm.clock.now()
    max_age = timedelta(seconds=_max_age(vm))
    if "expires" not in request:
        if required:
            raise BadCommand("expires", "is missing: a signed command must say when it expires")
        return now + max_age
    value = request["expires"]
    try:
        expires = parse_iso(value) if isinstance(value, str) else None
        if expires is not None:
            iso(expires)  # a time zone can push a valid-looking time out of range
    except (ValueError, OverflowError):
        expires = None
    if expires is None:
        raise BadCommand("expires", "must be an ISO 8601 time such as 2026-11-25T03:00:00Z")
    if expires <= now:
        raise BadCommand("expires", f"the command expired at {iso(expires)}; nothing was done")
    if expires > now + max_age:
        raise BadCommand("expires", f"{iso(expires)} is more than {max_age.total_seconds():.0f} s "
                                    "ahead; a command may not live that long")
    return expires


Apply = Callable[[datetime], Any]
Handler = Callable[["VendingMachine", _Args, str], Apply]


def _slot(vm: VendingMachine, args: _Args) -> SlotState:
    numbers = sorted(vm.slots)
    number = args.integer("slot", 1, 10**6, f"one of the slot numbers {numbers[0]}..{numbers[-1]}")
    if number not in vm.slots:
        raise BadCommand("slot", f"there is no slot {number}; slots are {numbers[0]}..{numbers[-1]}")
    return vm.slots[number]


def _save(vm: VendingMachine, slot: SlotState, now: datetime, event: Event) -> dict:
    vm.set_slot(slot)
    vm.ledger.add_event(event, now)
    return {"slot": slot.slot, "product": slot.product, "count": slot.count,
            "capacity": slot.capacity, "low_at": slot.low_at}


def _refill(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    """Staff say what a slot now holds (or every slot: full), and optionally the month its
    packs expire at the end of (``expiry``; a refill without one leaves the slot undated)
    and how many packs past their date they took out (``expired``)."""
    expiry = _month(args, "expiry") if args.has("expiry") else None
    if args.flag("all"):
        if args.has("slot") or args.has("count"):
            raise BadCommand("all", "cannot be given with slot or count")
        if args.has("expired"):
            raise BadCommand("expired", "is a slot's: give slot and count with it, not all")
        targets = [replace(s, count=s.capacity, known_empty=False, expires=expiry)
                   for s in vm.slots.values()]
        expired = 0
    else:
        slot = _slot(vm, args)
        count = args.integer("count", 0, slot.capacity,
                             f"the packs now in slot {slot.slot}, 0 to {slot.capacity}")
        expired = args.integer("expired", 0, 10_000) if args.has("expired") else 0
        targets = [replace(slot, count=count, known_empty=False, expires=expiry)]

    def apply(now: datetime) -> Any:
        done = []
        for s in targets:
            dated = f", use by end of {s.expires}" if s.expires else ""
            done.append(_save(vm, s, now, Event("refilled", s.slot, s.product,
                                                f"count {s.count}{dated}")))
            if s.expires:
                done[-1]["expires"] = s.expires
        if expired:
            vm.ledger.add_event(Event("expired_removed", targets[0].slot, targets[0].product,
                                      f"{expired} packs past their date taken out",
                                      count=expired), now)
            done[-1]["expired"] = expired
        vm.recounted()
        return {"slots": done}

    return apply


def _month(args: _Args, name: str) -> str:
    value = args.text(name)
    if not MONTH.fullmatch(value):
        raise BadCommand(name, f"must be a month such as 2027-03, not {value[:20]!r}")
    return value


def _configure_slot(vm: VendingMachine, args: _Args, origin: str) -> Apply:
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


def _enable(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    new = replace(_slot(vm, args), enabled=True)
    return lambda now: _save(vm, new, now, Event("slot_enabled", new.slot, new.product))


def _disable(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    new = replace(_slot(vm, args), enabled=False)
    return lambda now: _save(vm, new, now, Event("slot_disabled", new.slot, new.product))


def _clear_fault(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    old = _slot(vm, args)
    new = replace(old, fault=None, known_empty=False)
    return lambda now: _save(vm, new, now, Event("fault_cleared", new.slot, new.product,
                                                 f"was: {old.fault}" if old.fault else None))


def _set_mode(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    mode = args.text("mode", MODES)

    def apply(now: datetime) -> Any:
        vm.staff_mode = Mode(mode)
        vm.ledger.set_meta("mode", mode)
        vm.ledger.add_event(Event("mode_changed", detail=mode), now)
        return {"mode": vm.mode}

    return apply


def _set_messages(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    args.used.add("messages")
    messages = args.request.get("messages")
    if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
        raise BadCommand("messages", f"must be a list of at most {MAX_MESSAGES} strings")
    for i, m in enumerate(messages):
        if not isinstance(m, str) or not m.strip() or len(m) > MAX_MESSAGE_CHARS:
            raise BadCommand(f"messages[{i}]",
                             f"must be a non-empty string of at most {MAX_MESSAGE_CHARS} characters")
        if not m.isprintable():
            raise BadCommand(f"messages[{i}]", "must be one line of printable text (no control "
                                               "characters)")

    def apply(now: datetime) -> Any:
        vm.messages = list(messages)
        vm.ledger.set_meta("messages", messages)
        vm.ledger.add_event(Event("messages_changed", detail=f"{len(messages)} messages"), now)
        return {"messages": messages}

    return apply


def _status(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    from controller.vending import Change

    def apply(now: datetime) -> Any:
        vm.on_change(Change.EVERYTHING)
        if origin == "hub":  # what has been published, nothing live
            return {"state": vm.state_report(public=True), "stock": vm.stock_report(public=True),
                    "hub_open": vm.hub_open()}
        return {"state": vm.state_report(), "stock": vm.stock_report(),
                "outbox": vm.ledger.outbox_size(), "open_vends": len(vm.ledger.open_vends()),
                "hub_open": vm.hub_open()}

    return apply


def _stock(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    return lambda now: vm.stock_report(public=origin == "hub")


def _usage(vm: VendingMachine, args: _Args, origin: str) -> Apply:
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
    # closed buckets only: the open one's running counts would time each vend
    return lambda now: {"buckets": vm.ledger.usage(bounds.get("since"), bounds.get("until"),
                                                   closed_only=True),
                        "totals": vm.ledger.totals(closed_only=True)}


def _events(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    limit = args.integer("limit", 1, 500) if args.has("limit") else 20
    return lambda now: {"events": vm.ledger.events(limit)}


def _board(vm: VendingMachine, args: _Args, origin: str) -> Apply:
    """``nspvend board update``'s steps: ``release`` (pause vending, let go of the board's
    port) and ``resume`` (open it again, wait for the board's hello, serve as before). Only
    over the control socket: nobody away from the machine takes its board away."""
    action = args.text("action", ("release", "resume"))
    if origin != "local":
        raise BadCommand("cmd", "board: only at the machine (nspvend board update)")
    hw = vm.hw
    if not hasattr(hw, "release_board"):
        raise BadCommand("action", "this machine has no dispenser board of its own (hal is "
                                   "not serial)")

    def apply(now: datetime) -> Any:
        if action == "release":
            vm.pause_for_update()
            hw.release_board()
            return {"port": hw.board_port()}
        online = hw.resume_board(wait=8)  # on the loop: the watchdog waits for it
        firmware = hw.board_firmware()
        vm.resume_after_update(f"the board answered: firmware {firmware}" if online else
                               "the board has not answered yet")
        return {"online": online, "firmware": firmware}

    return apply


# name -> (handler, whether it changes the machine)
COMMANDS: dict[str, tuple[Handler, bool]] = {
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
    "board": (_board, False),
}

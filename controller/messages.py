"""The MQTT contract (docs/hub.md) in code: one place that writes each payload and
reads it back, used by the machine that sends and by whatever listens (the hub, ``watch``).

Each topic's payload is a frozen dataclass: :meth:`payload` gives the dict to send, and
``read`` takes bytes, text or a dict and gives the dataclass back, or raises
:class:`BadMessage` naming the field that is wrong. Payloads are compact JSON (never NaN:
that is not JSON); commands are read with a bound on size and nesting before any parser sees
them; a command from the hub is signed with HMAC-SHA256 over its canonical JSON.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

SCHEMA = 1
ONLINE, OFFLINE = "online", "offline"
MAX_INT = 2**31 - 1  # what any store keeps in an integer column
MAX_NAME = 200  # an id, a product, an event's type: what a store keeps in a key
MAX_TEXT = 4000  # any other text (an event's detail, a version)
MAX_PRODUCTS = 100


class Mode(enum.StrEnum):
    """What the machine is doing (``state.mode``)."""

    IN_SERVICE = "in_service"
    OUT_OF_SERVICE = "out_of_service"
    SERVICE = "service"  # the door is open: staff at work


MODES = tuple(m.value for m in Mode)
SLOT_STATUSES = ("ok", "low", "empty", "fault", "disabled")


class BadMessage(ValueError):
    """A payload that does not keep the contract; ``field`` names where."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


def _object(raw: bytes | str | dict, schema: bool = True) -> dict:
    if isinstance(raw, dict):
        data = raw
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadMessage("payload", "is not JSON") from None
    if not isinstance(data, dict):
        raise BadMessage("payload", "is not a JSON object")
    if schema and data.get("schema") != SCHEMA:
        raise BadMessage("schema", f"must be {SCHEMA}, not {data.get('schema')!r}")
    return data


def _take(data: dict, name: str, kinds: type | tuple[type, ...], required: bool = True,
          choices: tuple = ()) -> Any:
    if name not in data or data[name] is None:
        if required and not (name in data and type(None) in _kinds(kinds)):
            raise BadMessage(name, "is missing")
        return None
    value = data[name]
    if isinstance(value, bool) and bool not in _kinds(kinds):
        raise BadMessage(name, f"must not be {value!r}")
    if not isinstance(value, kinds):
        raise BadMessage(name, f"has the wrong type ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadMessage(name, "is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        raise BadMessage(name, f"is out of range (at most {MAX_INT})")
    if isinstance(value, str) and (len(value) > MAX_TEXT or "\x00" in value):
        raise BadMessage(name, f"must be at most {MAX_TEXT} characters, none of them NUL")
    if choices and value not in choices:
        raise BadMessage(name, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value


def _kinds(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _name(value: str, name: str) -> str:
    """An id, a product or a type: what a store keeps in a key."""
    if not 0 < len(value) <= MAX_NAME or not value.isprintable():
        raise BadMessage(name, f"must be 1 to {MAX_NAME} printable characters")
    return value


def _take_name(data: dict, name: str, required: bool = True) -> str | None:
    value = _take(data, name, str, required)
    return None if value is None else _name(value, name)


MONTH = re.compile(r"(20[0-9][0-9])-(0[1-9]|1[0-2])")  # ASCII digits only (not \d)
VERSION_TEXT = re.compile(r"[A-Za-z0-9.+-]{1,40}")
_UTC_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")  # ASCII digits


def _month(data: dict, name: str) -> str | None:
    """An optional month such as ``2027-03`` (the month packs expire at the end of)."""
    value = _take(data, name, (str, type(None)), required=False)
    if value is not None and not MONTH.fullmatch(value):
        raise BadMessage(name, "must be a month such as 2027-03")
    return value


def _counts(data: dict, name: str) -> dict[str, int]:
    value = _take(data, name, dict)
    if len(value) > MAX_PRODUCTS:
        raise BadMessage(name, f"has more than {MAX_PRODUCTS} products")
    for product, n in value.items():
        _name(product, f"{name}.{product[:40]!r}")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_INT:
            raise BadMessage(f"{name}.{product}", "must be a whole number, 0 or more")
    return dict(value)


def _version(data: dict, name: str, required: bool = False) -> str | None:
    """A version: a short text of ASCII letters, digits, dots, dashes and pluses."""
    value = _take(data, name, str, required=required)
    if value is not None and not VERSION_TEXT.fullmatch(value):
        raise BadMessage(name, "must be a version like 4 or 0.3.0 (at most 40 characters)")
    return value


def _ts(data: dict, name: str = "ts", required: bool = True) -> str | None:
    value = _take(data, name, str, required)
    if value is None:
        return value
    try:
        # the shape first (strptime is slow: a hub drains thousands of these a second), then
        # whether it is a real time (no 31 November, no second 60: as strptime did)
        ok = bool(_UTC_TIME.fullmatch(value)) and bool(datetime.fromisoformat(value[:19]))
    except ValueError:
        ok = False
    if not ok:
        raise BadMessage(name, f"must be an ISO 8601 UTC time like 2026-11-25T03:00:00Z, "
                               f"not {value[:40]!r}")
    return value


class Message:
    """What every payload class has: its topic leaf, retain flag and QoS."""

    LEAF: ClassVar[str]
    RETAIN: ClassVar[bool] = False
    QOS: ClassVar[int] = 1

    def payload(self) -> dict:
        body: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            body[f.name] = _plain(value)
        return body

    def encode(self) -> str:
        return compact(self.payload())


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)
                if not (getattr(value, f.name) is None and f.metadata.get("optional"))}
    return value


def optional() -> Any:
    return field(default=None, metadata={"optional": True})


@dataclass(frozen=True)
class StateMessage(Message):
    """``{root}/state``: how the machine is (retained)."""

    LEAF: ClassVar[str] = "state"
    RETAIN: ClassVar[bool] = True
    mode: str
    door: str
    sharps_bin: str
    temperature_c: float | None
    faults: tuple[str, ...]
    version: str
    uptime_s: int
    clock_synced: bool
    ts: str
    board_firmware: str | None = optional()  # the dispenser board's firmware version, when known

    @classmethod
    def read(cls, raw: bytes | str | dict) -> StateMessage:
        d = _object(raw)
        faults = _take(d, "faults", list)
        if len(faults) > MAX_PRODUCTS or not all(
                isinstance(f, str) and len(f) <= MAX_TEXT and "\x00" not in f for f in faults):
            raise BadMessage("faults", f"must be a list of at most {MAX_PRODUCTS} texts")
        return cls(mode=_take(d, "mode", str, choices=MODES),
                   door=_take(d, "door", str, choices=("open", "closed")),
                   sharps_bin=_take(d, "sharps_bin", str, choices=("ok", "full")),
                   temperature_c=_take(d, "temperature_c", (int, float, type(None))),
                   faults=tuple(faults), version=_version(d, "version", required=True),
                   uptime_s=_take(d, "uptime_s", int), clock_synced=_take(d, "clock_synced", bool),
                   ts=_ts(d), board_firmware=_version(d, "board_firmware"))


@dataclass(frozen=True)
class SlotStock:
    """One slot in a ``stock`` message."""

    slot: int
    product: str
    count: int
    capacity: int
    low_at: int
    status: str
    expires: str | None = optional()  # the month its packs expire at the end of: 2027-03


@dataclass(frozen=True)
class ProductStock:
    """One product in a ``stock`` message: packs in its serving slots and one status."""

    count: int
    status: str
    name: str | None = optional()  # the product's display name (readers take it missing)
    shelf_life_months: int | None = optional()  # a fresh pack's life, where configured


@dataclass(frozen=True)
class StockMessage(Message):
    """``{root}/stock``: what each slot holds, as far as the hub may know (retained)."""

    LEAF: ClassVar[str] = "stock"
    RETAIN: ClassVar[bool] = True
    ts: str
    slots: tuple[SlotStock, ...]
    products: dict[str, ProductStock]

    @classmethod
    def read(cls, raw: bytes | str | dict) -> StockMessage:
        d = _object(raw)
        slots = []
        for i, s in enumerate(_take(d, "slots", list)):
            if not isinstance(s, dict):
                raise BadMessage(f"slots[{i}]", "must be an object")
            try:
                slots.append(SlotStock(
                    slot=_take(s, "slot", int), product=_take_name(s, "product"),
                    count=_take(s, "count", int), capacity=_take(s, "capacity", int),
                    low_at=_take(s, "low_at", int),
                    status=_take(s, "status", str, choices=SLOT_STATUSES),
                    expires=_month(s, "expires")))
            except BadMessage as e:
                raise BadMessage(f"slots[{i}].{e.field}", str(e).split(": ", 1)[1]) from None
        products = {}
        listed = _take(d, "products", dict)
        if len(slots) > MAX_PRODUCTS or len(listed) > MAX_PRODUCTS:
            raise BadMessage("slots", f"more than {MAX_PRODUCTS} slots or products")
        for product, p in listed.items():
            _name(product, f"products.{product[:40]!r}")
            if not isinstance(p, dict):
                raise BadMessage(f"products.{product}", "must be an object")
            try:
                products[product] = ProductStock(
                    count=_take(p, "count", int),
                    status=_take(p, "status", str, choices=SLOT_STATUSES),
                    name=_take(p, "name", (str, type(None)), required=False),
                    shelf_life_months=_take(p, "shelf_life_months", (int, type(None)),
                                            required=False))
            except BadMessage as e:
                raise BadMessage(f"products.{product}.{e.field}",
                                 str(e).split(": ", 1)[1]) from None
        return cls(ts=_ts(d), slots=tuple(slots), products=products)


@dataclass(frozen=True)
class UsageMessage(Message):
    """``{root}/usage``: packs per product in one closed time bucket. Consumers keep each
    ``id`` once: a bucket may be sent again after a crash, never counted again."""

    LEAF: ClassVar[str] = "usage"
    id: str
    start: str
    end: str
    counts: dict[str, int]
    unconfirmed: dict[str, int]
    clock_synced: bool

    @classmethod
    def read(cls, raw: bytes | str | dict) -> UsageMessage:
        d = _object(raw)
        return cls(id=_take_name(d, "id"), start=_ts(d, "start"), end=_ts(d, "end"),
                   counts=_counts(d, "counts"), unconfirmed=_counts(d, "unconfirmed"),
                   clock_synced=_take(d, "clock_synced", bool))


@dataclass(frozen=True)
class EventMessage(Message):
    """``{root}/event``: something staff should hear of."""

    LEAF: ClassVar[str] = "event"
    id: str
    ts: str
    type: str
    slot: int | None = optional()
    product: str | None = optional()
    detail: str | None = optional()
    count: int | None = optional()  # packs, where the event is about a number of them

    @classmethod
    def read(cls, raw: bytes | str | dict) -> EventMessage:
        d = _object(raw)
        count = _take(d, "count", int, required=False)
        if count is not None and not 0 <= count <= MAX_INT:
            raise BadMessage("count", "must be a whole number, 0 or more")
        return cls(id=_take_name(d, "id"), ts=_ts(d), type=_take_name(d, "type"),
                   slot=_take(d, "slot", int, required=False),
                   product=_take_name(d, "product", required=False),
                   detail=_take(d, "detail", str, required=False), count=count)


@dataclass(frozen=True)
class CommandResult(Message):
    """``{root}/cmd/result``: the answer to a command, in the order the commands came."""

    LEAF: ClassVar[str] = "cmd/result"
    id: str | None
    ok: bool
    result: Any = optional()
    error: str | None = optional()

    def payload(self) -> dict:  # the one payload without "schema" (docs/hub.md)
        body = {"id": self.id, "ok": self.ok}
        body.update({"result": self.result} if self.ok else {"error": self.error})
        return body

    @classmethod
    def read(cls, raw: bytes | str | dict) -> CommandResult:
        d = _object(raw, schema=False)
        ok = _take(d, "ok", bool)
        return cls(id=_take(d, "id", (str, type(None))), ok=ok, result=d.get("result"),
                   error=None if ok else _take(d, "error", str))


@dataclass(frozen=True)
class Topic:
    """One topic under a machine's root: its leaf, retain flag, QoS and payload class."""

    leaf: str
    retain: bool
    qos: int
    message: type[Message] | None  # None: availability (plain text) and cmd (see commands)


TOPICS: dict[str, Topic] = {t.leaf: t for t in (
    Topic("availability", True, 1, None),
    Topic("state", True, 1, StateMessage),
    Topic("stock", True, 1, StockMessage),
    Topic("usage", False, 1, UsageMessage),
    Topic("event", False, 1, EventMessage),
    Topic("cmd", False, 1, None),
    Topic("cmd/result", False, 1, CommandResult),
)}


def machine_root(prefix: str, machine_id: str) -> str:
    return f"{prefix}/{machine_id}"


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(machine_id, leaf)`` of a topic under ``prefix``, or None if it is not one of ours."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1:].split("/", 1)
    if len(parts) != 2 or parts[1] not in TOPICS or not parts[0]:
        return None
    return parts[0], parts[1]


def answer(command_id: str | None, result: Any) -> dict:
    """A command's answer: it ran, and this is what it says."""
    return CommandResult(command_id, True, result=result).payload()


def refusal(command_id: str | None, error: str) -> dict:
    """A command's answer: refused (``error`` names the field: ``"FIELD: problem"``)."""
    return CommandResult(command_id, False, error=error).payload()


HA_PREFIX = "homeassistant"  # Home Assistant's default discovery prefix


def home_assistant_configs(machine_id: str, root: str, products: list[tuple[str, str]],
                           version: str) -> list[tuple[str, dict]]:
    """Home Assistant's MQTT discovery configs for one machine: ``(topic, payload)`` each,
    published retained. Each reads the machine's own ``state`` and ``stock``; the node id is
    the machine id, so a broker ACL can give each machine its own subtree."""
    device = {"identifiers": [f"nspvend_{machine_id}"], "name": f"NSP machine {machine_id}",
              "manufacturer": "nspvend", "sw_version": version}
    common = {"availability_topic": f"{root}/availability", "device": device}
    state, stock = f"{root}/state", f"{root}/stock"
    configs: list[tuple[str, str, dict]] = [
        ("sensor", f"stock_{product_id}", {
            "name": f"{name} in stock", "state_topic": stock,
            "value_template": f"{{{{ value_json.products['{product_id}'].count }}}}",
            "unit_of_measurement": "packs", "state_class": "measurement"})
        for product_id, name in products]
    configs += [
        ("sensor", "mode", {"name": "Mode", "state_topic": state,
                            "value_template": "{{ value_json.mode }}"}),
        ("sensor", "faults", {"name": "Faults", "state_topic": state,
                              "value_template": "{{ value_json.faults | length }}"}),
        ("sensor", "temperature", {
            "name": "Temperature", "state_topic": state, "device_class": "temperature",
            "unit_of_measurement": "°C", "value_template": "{{ value_json.temperature_c }}"}),
        ("binary_sensor", "door", {
            "name": "Door", "state_topic": state, "device_class": "door",
            "value_template": "{{ 'ON' if value_json.door == 'open' else 'OFF' }}"}),
        ("binary_sensor", "sharps_bin", {
            "name": "Sharps bin full", "state_topic": state, "device_class": "problem",
            "value_template": "{{ 'ON' if value_json.sharps_bin == 'full' else 'OFF' }}"}),
    ]
    out = []
    for component, key, body in configs:
        unique = f"nspvend_{machine_id}_{key}".replace("-", "_")
        out.append((f"{HA_PREFIX}/{component}/{machine_id}/{key}/config",
                    {**body, **common, "unique_id": unique, "object_id": unique}))
    return out


def read_availability(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if text not in (ONLINE, OFFLINE):
        raise BadMessage("availability", f"must be {ONLINE} or {OFFLINE}, not {text[:20]!r}")
    return text


MAX_COMMAND_BYTES = 16 * 1024
MAX_NESTING = 32  # a command is two levels deep; far deeper is an attack on the parser


def compact(payload: dict) -> str:
    """A payload as the contract sends it: compact JSON, refusing NaN and infinities."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def decode_request(payload: bytes) -> tuple[Any, dict | None]:
    """A command's bytes as JSON, or the answer refusing them (the rest is ``run_command``'s)."""
    if len(payload) > MAX_COMMAND_BYTES:
        return None, refusal(None, f"request: larger than {MAX_COMMAND_BYTES} bytes")
    if nesting(payload) > MAX_NESTING:
        return None, refusal(None, f"request: nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(payload), None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, refusal(None, "request: not valid JSON")


def nesting(payload: bytes) -> int:
    """How deep ``[`` and ``{`` nest outside strings (before parsing: no recursion limits)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


# -- signed commands --------------------------------------------------------------------------
def canonical_command(command: dict) -> bytes:
    """The bytes a command's signature covers: the command without ``sig``, keys sorted."""
    unsigned = {k: v for k, v in command.items() if k != "sig"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def command_signature(command: dict, key: str) -> str:
    """The lowercase hex HMAC-SHA256 of :func:`canonical_command`, keyed with ``key``."""
    return hmac.new(key.encode("utf-8"), canonical_command(command), hashlib.sha256).hexdigest()


def sign_command(command: dict, key: str) -> dict:
    """``command`` with its ``sig`` (the hub's side; it must carry ``expires`` already)."""
    return {**command, "sig": command_signature(command, key)}


def signature_ok(command: dict, key: str) -> bool:
    """Whether ``command["sig"]`` is the signature of the rest under ``key``."""
    sig = command.get("sig")
    if not isinstance(sig, str):
        return False
    try:
        return hmac.compare_digest(sig, command_signature(command, key))
    except (TypeError, ValueError):  # a sig with characters no signature has
        return False


def read_key(path: str) -> str:
    """A command key file's secret: its text, stripped (raises OSError, ValueError)."""
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise ValueError("is empty")
    return key

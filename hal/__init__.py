"""The hardware the controller needs, in the machine's own words.

The controller talks only to the interfaces here; a backend is chosen by name through
:func:`open_hardware` and takes its own settings (its table of the config). Backends are
plug-ins, found as entry points in the ``nspvend.hal`` group, as gpiozero finds its pin
factories: ``serial`` and ``gpio`` here, ``sim`` and ``gpio-mock`` in the simulator. The
controller never imports a backend, and nothing here imports the simulator.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hal.screens import Screen

WIRINGS = ("gpio", "serial", "sim")  # the config's ``hal``
BACKEND_GROUP = "nspvend.hal"
# gpiozero's pin factories by config name: where each lives
PIN_FACTORIES = {
    "lgpio": "gpiozero.pins.lgpio:LGPIOFactory",  # Raspberry Pi OS Bookworm
    "rpigpio": "gpiozero.pins.rpigpio:RPiGPIOFactory",
    "pigpio": "gpiozero.pins.pigpio:PiGPIOFactory",
    "native": "gpiozero.pins.native:NativeFactory",
    "mock": "gpiozero.pins.mock:MockFactory",  # driven by the simulator (backend gpio-mock)
}


class VendOutcome(enum.Enum):
    """What one motor turn on one slot came to."""

    DROPPED = "dropped"
    """The spiral turned and the drop sensor saw a pack fall."""
    NOTHING_DROPPED = "nothing_dropped"
    """The spiral turned a full turn and nothing fell: jammed or empty."""
    MOTOR_STALLED = "motor_stalled"
    """The motor never reached its home switch: dead motor or blocked spiral."""
    UNCERTAIN = "uncertain"
    """The spiral turned, but the drop sensor cannot be trusted (stuck beam)."""
    NOT_RUN = "not_run"
    """The hardware knows it never ran this request (answer to a recall)."""
    UNKNOWN = "unknown"
    """No answer from the hardware: the outcome must be learnt later."""


class HardwareEvent:
    """Base of everything the hardware reports by itself."""


@dataclass(frozen=True)
class ButtonPressed(HardwareEvent):
    """A client pressed a product button; ``at`` is when (the daemon's monotonic clock),
    so a press that waited too long in the queue can be let go."""

    button: int
    at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DoorChanged(HardwareEvent):
    open: bool


@dataclass(frozen=True)
class SharpsBinChanged(HardwareEvent):
    full: bool


@dataclass(frozen=True)
class BoardLink(HardwareEvent):
    """The dispenser board went away or came back (serial wiring); ``outdated``: it is there
    but its firmware speaks an older link protocol than this host (``nspvend board update``
    brings it up to date)."""

    online: bool
    detail: str = ""
    outdated: bool = False


@dataclass(frozen=True)
class BoardFault(HardwareEvent):
    """The board says things that cannot be true (a value out of range): ``detail`` says
    what; None when it makes sense again. The values are not used."""

    detail: str | None


EventSink = Callable[[HardwareEvent], None]


class LedState(enum.StrEnum):
    """What the status light says."""

    READY = "ready"
    BUSY = "busy"
    FAULT = "fault"
    OFF = "off"


class Dispenser(Protocol):
    """Turns slot motors and says what dropped."""

    def boot_id(self) -> str | None:
        """Who is turning the motors: changes whenever the hardware restarts and forgets."""
        ...

    def highest_seq(self) -> int:
        """The highest request number the hardware has seen since it started (0: none), so
        a controller that lost its own count never uses one again."""
        ...

    def vend(self, slot: int, seq: int) -> VendOutcome:
        """Turn ``slot`` once for request ``seq``; a repeated ``seq`` never turns twice."""
        ...

    def recall(self, seq: int, boot_id: str | None) -> VendOutcome | None:
        """The outcome of an earlier request ``seq``, sent while the hardware was ``boot_id``.

        ``NOT_RUN`` when the hardware, still in that same boot, never got it; ``None``
        when the outcome cannot be learnt (it restarted since, or has no memory).
        """
        ...


class Display(Protocol):
    """What the client reads: a character LCD, a graphic screen, a kiosk's file. Each lays
    the screen out for its own size (``hal.screens.pages``)."""

    def show(self, screen: Screen) -> int:
        """Show ``screen`` from its first page; returns how many pages it has here."""
        ...

    def turn_page(self) -> None:
        """Show the screen's next page (after the last, the first); one page: nothing."""
        ...


class StatusLed(Protocol):
    """One status light."""

    def set(self, state: LedState) -> None: ...


class Hardware(Protocol):
    """One wired machine: its outputs, and its inputs reported to a sink."""

    dispenser: Dispenser
    display: Display
    led: StatusLed

    def start(self, sink: EventSink) -> None:
        """Begin reporting button, door and bin events to ``sink``."""
        ...

    def door_open(self) -> bool: ...

    def sharps_bin_full(self) -> bool: ...

    def temperature_c(self) -> float | None: ...

    def close(self) -> None:
        """Stop every motor and release the hardware."""
        ...


class RequestMemory:
    """What hardware without a board of its own (``sim``, ``gpio``) remembers of its last
    vend requests, by sequence number, for as long as it runs: what a board's firmware
    remembers on the serial wiring. A repeated number is answered from here, never turned."""

    def __init__(self, boot: str, size: int = 64) -> None:
        self.boot = boot
        self.size = size
        self._outcomes: OrderedDict[int, VendOutcome] = OrderedDict()

    def outcome(self, seq: int) -> VendOutcome | None:
        return self._outcomes.get(seq)

    def remember(self, seq: int, outcome: VendOutcome) -> None:
        self._outcomes[seq] = outcome
        while len(self._outcomes) > self.size:
            self._outcomes.popitem(last=False)

    def forget_all(self, boot: str) -> None:
        """The hardware lost power or crashed: a new boot, and nothing remembered."""
        self.boot = boot
        self._outcomes.clear()

    def highest(self) -> int:
        return max(self._outcomes, default=0)

    def recall(self, seq: int, boot_id: str | None) -> VendOutcome | None:
        """As :meth:`Dispenser.recall`: the outcome; ``NOT_RUN`` if this same boot, which
        would still remember it, never got it; None when that cannot be known."""
        if seq in self._outcomes:
            return self._outcomes[seq]
        forgotten = bool(self._outcomes) and seq < next(iter(self._outcomes))
        if boot_id == self.boot and not forgotten:
            return VendOutcome.NOT_RUN
        return None


# nspvend's own backends, as pyproject.toml's entry points name them (a test keeps the two
# equal): found without reading the installed packages' metadata, which costs a machine
# some 4 MB of imports (email, zipfile, csv) it has no other use for
OWN_BACKENDS = {"serial": "hal.serial:open_hardware", "gpio": "hal.gpio:open_hardware",
                "sim": "simulator.backend:open_hardware",
                "gpio-mock": "simulator.gpio_world:open_hardware"}


def _entry_points() -> Any:
    from importlib.metadata import entry_points

    return entry_points(group=BACKEND_GROUP)


def backends() -> list[str]:
    """The names of the backends installed (nspvend's own, and entry points of
    ``nspvend.hal``)."""
    return sorted(set(OWN_BACKENDS) | {ep.name for ep in _entry_points()})


def open_hardware(backend: str, settings: Any) -> Hardware:
    """Open the backend called ``backend`` with its own ``settings`` (``Config.backend`` and
    ``Config.hardware_settings`` say which, for a config)."""
    if backend in OWN_BACKENDS:
        import importlib

        module, name = OWN_BACKENDS[backend].split(":")
        return getattr(importlib.import_module(module), name)(settings)
    found = [ep for ep in _entry_points() if ep.name == backend]
    if not found:
        raise ValueError(f"no hal backend {backend!r}; installed: {', '.join(backends())} "
                         "(is nspvend installed? scripts/setup installs it)")
    return found[0].load()(settings)

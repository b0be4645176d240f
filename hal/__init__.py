"""The hardware the controller needs, in the machine's own words.

The controller talks only to the interfaces here; a backend (``sim``, ``serial``,
``gpio``) is chosen by one config value through :func:`open_hardware`, and the
controller never imports a backend itself.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


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
    """The dispenser board went away or came back (serial wiring)."""

    online: bool
    detail: str = ""


@dataclass(frozen=True)
class BoardFault(HardwareEvent):
    """The board says things that cannot be true (a value out of range): ``detail`` says
    what; None when it makes sense again. The values are not used."""

    detail: str | None


EventSink = Callable[[HardwareEvent], None]


class Dispenser(Protocol):
    """Turns slot motors and says what dropped."""

    def boot_id(self) -> str | None:
        """Who is turning the motors: changes whenever the hardware restarts and forgets."""
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
    """Lines of text for the client: an LCD, an e-paper or a screen."""

    def show(self, lines: list[str]) -> None: ...


class StatusLed(Protocol):
    """One status light: ``ready``, ``busy``, ``fault`` or ``off``."""

    def set(self, state: str) -> None: ...


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


BACKENDS = ("sim", "serial", "gpio")


def open_hardware(backend: str, config: Any, **options: Any) -> Hardware:
    """Open the hardware backend named ``backend`` (one of :data:`BACKENDS`).

    ``config`` is the validated daemon configuration; ``options`` are passed to
    the backend (the simulator takes ``model=`` and ``sleep=``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown hal backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    module = importlib.import_module(f"hal.{backend}")
    return module.open_hardware(config, **options)

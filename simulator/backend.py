"""The ``sim`` backend: the HAL's interfaces played by the simulator's physical model.

The simulator's face toward the HAL, registered as the ``sim`` entry point of
``nspvend.hal``. It behaves as the real board does where the controller can tell: a
request repeated with the same sequence number never turns a motor twice, outcomes of
recent requests can be recalled, and a power cut wipes that memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hal import (
    BoardLink,
    ButtonPressed,
    DoorChanged,
    EventSink,
    HardwareEvent,
    LedState,
    RequestMemory,
    SharpsBinChanged,
    VendOutcome,
)
from hal.screens import Screen
from hal.settings import SimSettings
from simulator.model import PhysicalMachine, PowerCut

log = logging.getLogger(__name__)

class SimDispenser:
    """Turns the model's spirals; remembers recent outcomes by sequence number."""

    def __init__(self, model: PhysicalMachine, sleep: Callable[[float], None] | None) -> None:
        self.model = model
        self.sleep = sleep
        self._boots = 1
        self.memory = RequestMemory(self.boot_id())

    def boot_id(self) -> str | None:
        return f"sim-{self._boots}"  # as last heard, even while silent

    def highest_seq(self) -> int:
        return self.memory.highest()

    def vend(self, slot: int, seq: int) -> VendOutcome:
        if self.model.board_silent:
            return VendOutcome.UNKNOWN
        if (known := self.memory.outcome(seq)) is not None:
            return known
        try:
            turn = self.model.turn(slot, self.sleep)
        except PowerCut:
            self._boots += 1  # the board lost power too, and its memory with it
            self.memory.forget_all(self.boot_id())
            raise
        if not turn.home_reached:
            outcome = VendOutcome.MOTOR_STALLED
        elif self.model.sensor_stuck:
            outcome = VendOutcome.UNCERTAIN
        elif turn.beam_seen:
            outcome = VendOutcome.DROPPED
        else:
            outcome = VendOutcome.NOTHING_DROPPED
        self.memory.remember(seq, outcome)
        return outcome

    def recall(self, seq: int, boot_id: str | None) -> VendOutcome | None:
        if self.model.board_silent:
            return VendOutcome.UNKNOWN
        return self.memory.recall(seq, boot_id)


class SimDisplay:
    """Keeps the screen last shown (and its paragraphs as ``lines``), for the terminal front
    end and for tests."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.screen: Screen | None = None
        self.page = 0
        self.changed = threading.Event()

    def show(self, screen: Screen) -> int:
        self.screen = screen
        self.lines = screen.lines
        self.page = 0
        self.changed.set()
        return 1

    def turn_page(self) -> None:
        """The simulator's screen shows every paragraph at once; a front end that draws a
        smaller display (the demo's 20x4) follows the page count."""
        self.page += 1
        self.changed.set()


class SimLed:
    def __init__(self) -> None:
        self.state = LedState.OFF

    def set(self, state: LedState) -> None:
        self.state = state


class SimHardware:
    """A whole simulated machine: the model, its outputs and its input events."""

    def __init__(
        self,
        model: PhysicalMachine,
        sleep: Callable[[float], None] | None = None,
        control_path: str | None = None,
    ) -> None:
        self.model = model
        self.dispenser = SimDispenser(model, sleep)
        self.display = SimDisplay()
        self.led = SimLed()
        self._sink: EventSink | None = None
        self.control_path = control_path
        self._control = None
        model.subscribe(self._on_model_change)

    def start(self, sink: EventSink) -> None:
        self._sink = sink
        if self.control_path:
            from simulator.control import SimulatorControl

            self._control = SimulatorControl(self.control_path, self.model, self.press)

    def press(self, button: int) -> None:
        """A client presses product button ``button``."""
        self._emit(ButtonPressed(button))

    def _on_model_change(self, kind: str, detail: dict) -> None:
        if kind == "door":
            self._emit(DoorChanged(open=bool(detail["open"])))
        elif kind == "sharps_bin":
            self._emit(SharpsBinChanged(full=bool(detail["full"])))
        elif kind == "board":
            self._emit(BoardLink(online=bool(detail["online"]),
                                 detail="" if detail["online"] else "board stopped answering"))

    def _emit(self, event: HardwareEvent) -> None:
        if self._sink is None:
            log.debug("dropped %s: hardware not started", event)
            return
        self._sink(event)

    def door_open(self) -> bool:
        return self.model.door_open

    def sharps_bin_full(self) -> bool:
        return self.model.sharps_bin_full

    def temperature_c(self) -> float | None:
        return self.model.temperature_c

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        self._sink = None
        self.led.set(LedState.OFF)


def open_hardware(settings: SimSettings, model: PhysicalMachine | None = None,
                  sleep: Callable[[float], None] | None = None) -> SimHardware:
    """A simulated machine of ``settings.slots`` slots, or the given ``model``.

    With ``settings.control`` the simulator's control socket (docs/simulator.md) is served there,
    so another process can press buttons and read the truth.
    """
    if model is None:
        model = PhysicalMachine(settings.slots, turn_s=settings.motor_s, drop_s=0.0)
        if sleep is None and settings.motor_s:
            sleep = time.sleep
    return SimHardware(model, sleep, control_path=settings.control)

"""The physical model wired to gpiozero's mock pins, for the ``gpio`` backend without a Pi.

A motor pin switched on makes the model turn that spiral: the home switch opens, a
pack (if there is one and nothing is jammed) crosses the drop beam, and the home
switch closes again one turn later. Buttons, the door and the sharps bin drive their
input pins; an injected stuck sensor holds the beam broken. With ``turn_s`` 0 all of
it happens at once, inside the call that switched the motor on, so tests need no
waiting; otherwise a thread plays the turn in real time (the demo).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from hal.gpio import GpioHardware
from hal.settings import GpioSettings, SimSettings
from simulator.control import SimulatorControl
from simulator.model import PhysicalMachine, PowerCut

log = logging.getLogger(__name__)


class WatchedPin(MockPin):
    """A mock output pin that tells the world when it is written."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.watcher: Any = None

    def _set_state(self, value: Any) -> None:
        super()._set_state(value)
        if self.watcher is not None:
            self.watcher(bool(value))


class _Input:
    """One mock input pin and which level means "active" for the wiring."""

    def __init__(self, factory: MockFactory, number: int, pull: str) -> None:
        self.pin = factory.pin(number)
        self.active_level = pull != "up"  # pulled up: the switch closes to ground

    def set(self, active: bool) -> None:
        if active == self.active_level:
            self.pin.drive_high()
        else:
            self.pin.drive_low()

    def pulse(self, held: Callable[[], None] = lambda: None) -> None:
        try:
            self.set(True)
            held()
        finally:
            self.set(False)  # a finger lets go of a button even if the power fails


class GpioWorld:
    """The machine on the other side of the pins.

    Create it before the backend opens its devices, on the same ``factory`` (so the motor
    pins are watched ones), and :meth:`connect` it after.
    """

    def __init__(self, model: PhysicalMachine, factory: MockFactory, gpio: Any,
                 turn_s: float = 0.0) -> None:
        self.model, self.factory, self.gpio, self.turn_s = model, factory, gpio, turn_s
        self.running: dict[int, bool] = {}
        self.motor_pins: dict[int, WatchedPin] = {}
        self.hand_s = 0.0  # the clients' hands' own time, which the backend's debounce reads
        for slot, number in gpio.motors.items():
            pin = factory.pin(number, pin_class=WatchedPin)
            pin.watcher = lambda level, slot=slot: self._motor_written(slot, level)
            self.motor_pins[slot] = pin
            self.running[slot] = False

    def connect(self) -> None:
        """Drive the input pins, once the backend has opened them (and set their pulls)."""
        gpio, factory, model = self.gpio, self.factory, self.model
        self.homes = {slot: _Input(factory, n, gpio.switches_pull)
                      for slot, n in gpio.home_switches.items()}
        for home in self.homes.values():
            home.set(True)  # at rest every spiral sits on its home switch
        self.buttons = {b: _Input(factory, n, gpio.buttons_pull) for b, n in gpio.buttons.items()}
        for button in self.buttons.values():
            button.set(False)
        self.drop = _Input(factory, gpio.drop_sensor, gpio.drop_sensor_pull)
        self.drop.set(model.sensor_stuck)
        self.door = _Input(factory, gpio.door, gpio.switches_pull) if gpio.door is not None else None
        self.bin = (_Input(factory, gpio.sharps_bin, gpio.switches_pull)
                    if gpio.sharps_bin is not None else None)
        self._set_door(model.door_open)
        self._set_bin(model.sharps_bin_full)
        model.subscribe(self._on_model_change)

    # -- the world acts --------------------------------------------------------
    def press(self, button: int) -> None:
        """A client presses product button ``button`` (and lets go): a second after the
        last press anyone made, held a tenth of a second, in the hands' own time."""
        if button in self.buttons:
            self.hand_s += 1.0
            self.buttons[button].pulse(held=lambda: self._hold(0.1))
        else:
            log.warning("no pin for button %d", button)

    def contacts(self, button: int, *levels: tuple[float, bool]) -> None:
        """Button ``button``'s contacts, level by level: ``(after_s, closed)`` each, as a
        bouncing button's chatter is played."""
        for after_s, closed in levels:
            self._hold(after_s)
            self.buttons[button].set(closed)

    def _hold(self, seconds: float) -> None:
        self.hand_s += seconds

    def hand_time(self) -> float:
        return self.hand_s

    def motor_on(self, slot: int) -> bool:
        return self.running.get(slot, False)

    def _on_model_change(self, kind: str, detail: dict) -> None:
        if kind == "door":
            self._set_door(bool(detail["open"]))
        elif kind == "sharps_bin":
            self._set_bin(bool(detail["full"]))
        elif kind == "sensor":
            self.drop.set(bool(detail["stuck"]))

    def _set_door(self, is_open: bool) -> None:
        if self.door is not None:
            self.door.set(is_open == self.gpio.door_open_when_active)

    def _set_bin(self, full: bool) -> None:
        if self.bin is not None:
            self.bin.set(full == self.gpio.sharps_bin_full_when_active)

    # -- a motor is switched -----------------------------------------------------
    def _motor_written(self, slot: int, level: bool) -> None:
        on = level == self.gpio.motor_active_high
        was = self.running[slot]
        self.running[slot] = on
        if on and not was:
            if self.turn_s:
                threading.Thread(target=self._turn_slowly, args=(slot,), daemon=True,
                                 name=f"spiral-{slot}").start()
            else:
                self._turn(slot)

    def _turn(self, slot: int) -> None:
        model = self.model
        cut = model.power_cut_pending
        if cut == "before_motor":
            model.power_cut_pending = None
            raise PowerCut(f"power cut before slot {slot} turned")
        home_reached, will_drop = model.plan_turn(slot)
        if slot in self.homes:
            self.homes[slot].set(False)  # the spiral leaves its home position
        if cut == "before_drop" and home_reached:
            model.power_cut_pending = None
            raise PowerCut(f"power cut while slot {slot} turned")
        self._finish(slot, home_reached, will_drop)
        if cut == "after_drop":
            model.power_cut_pending = None
            raise PowerCut(f"power cut after slot {slot} turned")

    def _finish(self, slot: int, home_reached: bool, will_drop: bool) -> None:
        if will_drop:
            self.model.drop(slot)
            if not self.model.sensor_stuck:
                self.drop.pulse()
        if home_reached and slot in self.homes:
            self.homes[slot].set(True)

    def _turn_slowly(self, slot: int) -> None:
        home_reached, will_drop = self.model.plan_turn(slot)
        if slot in self.homes:
            self.homes[slot].set(False)
        stopped = threading.Event()
        # the motor must stay on for the whole turn; poll its pin at 20 ms, as a spiral would
        for _ in range(max(1, int(self.turn_s / 0.02))):
            if not self.running[slot]:
                log.info("slot %d motor stopped before its turn was done", slot)
                return
            stopped.wait(0.02)
        self._finish(slot, home_reached, will_drop)


class SimulatedGpioHardware(GpioHardware):
    """The gpio backend on mock pins, with the simulated world on the other side of them."""

    def __init__(self, settings: GpioSettings, factory: MockFactory, world: GpioWorld,
                 control_path: str | None = None) -> None:
        super().__init__(settings, factory, temperature=lambda: world.model.temperature_c,
                         clock=world.hand_time)
        self.world, self.model = world, world.model
        world.connect()
        self._control = (SimulatorControl(control_path, world.model, world.press)
                         if control_path else None)

    def press(self, button: int) -> None:
        """A client's hand on a button."""
        self.world.press(button)

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        super().close()


def open_hardware(settings: tuple[GpioSettings, SimSettings], model: PhysicalMachine | None = None,
                  sleep: Callable[[float], None] | None = None) -> SimulatedGpioHardware:
    """The ``gpio-mock`` backend: the gpio wiring of ``settings[0]`` on gpiozero's mock pins,
    driven by the physical ``model`` (or a new one as ``settings[1]`` describes); with a
    ``sleep``, turns take the model's time (the demo), else they happen at once (tests)."""
    gpio, sim = settings
    factory = MockFactory()
    if model is None:
        model = PhysicalMachine(max(gpio.motors), turn_s=sim.motor_s, drop_s=0.0)
    turn_s = sim.motor_s or (model.turn_s if sleep is not None else 0.0)
    world = GpioWorld(model, factory, gpio, turn_s=turn_s)
    return SimulatedGpioHardware(gpio, factory, world, sim.control)

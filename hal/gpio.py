"""The ``gpio`` backend: motors, sensors and buttons on the Pi's own GPIO, through gpiozero.

Each slot's motor is an output (through a relay or MOSFET board); the drop beam,
home switches, buttons, door and sharps bin are inputs reported by edge callbacks.
The vend cycle runs here, as the board's firmware runs it on the serial wiring:
arm the drop sensor, motor on, wait for the home switch (or ``turn_ms`` without
one), motor off, give a falling pack ``drop_wait_ms`` to cross the beam.

A motor is never left running: every turn is bounded by ``motor_timeout_ms``; a
timer independent of the calling thread cuts it too; every output is driven off
when the devices are opened, on any exception during a vend, and on close.

There is no board to remember outcomes across a restart: a vend interrupted by a
crash or power cut cannot be recalled, so the controller counts it unconfirmed.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice

from hal import (
    PIN_FACTORIES,
    ButtonPressed,
    DoorChanged,
    EventSink,
    HardwareEvent,
    LedState,
    RequestMemory,
    SharpsBinChanged,
    VendOutcome,
)
from hal.displays import FileDisplay
from hal.settings import GpioSettings

log = logging.getLogger(__name__)

SAFETY_MARGIN_S = 0.25  # the independent cut-off fires this long after the vend's own limit


def make_pin_factory(name: str) -> Any:
    """gpiozero's pin factory called ``name`` (``lgpio`` on Raspberry Pi OS Bookworm)."""
    if name not in PIN_FACTORIES:
        raise ValueError(f"unknown pin factory {name!r}")
    module, _, cls = PIN_FACTORIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def _input(number: int, pull: str, factory: Any, bounce_s: float | None) -> DigitalInputDevice:
    if pull == "none":  # a sensor that drives the line itself, high when active
        return DigitalInputDevice(number, pull_up=None, active_state=True, bounce_time=bounce_s,
                                  pin_factory=factory)
    return DigitalInputDevice(number, pull_up=pull == "up", bounce_time=bounce_s,
                              pin_factory=factory)


class GpioDispenser:
    """Runs one vend cycle at a time on the motor outputs and the drop and home inputs."""

    def __init__(self, hw: GpioHardware) -> None:
        self.hw, self.gpio = hw, hw.gpio
        self.memory = RequestMemory(self._new_boot())
        self._drop_seen = threading.Event()
        self._home_seen = threading.Event()
        self._watching_home: int | None = None
        hw.drop.when_activated = self._drop_edge
        for slot, home in hw.homes.items():
            home.when_activated = lambda slot=slot: self._home_edge(slot)

    @staticmethod
    def _new_boot() -> str:
        return f"gpio-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def boot_id(self) -> str | None:
        return self.memory.boot

    def highest_seq(self) -> int:
        return self.memory.highest()

    def _drop_edge(self) -> None:
        self._drop_seen.set()  # several edges from one pack are one drop: it is a flag

    def _home_edge(self, slot: int) -> None:
        if self._watching_home == slot:
            self._home_seen.set()

    def vend(self, slot: int, seq: int) -> VendOutcome:
        if (known := self.memory.outcome(seq)) is not None:
            return known
        motor = self.hw.motors[slot]
        home = self.hw.homes.get(slot)
        timeout_s = self.gpio.motor_timeout_ms / 1000
        beam_blocked = self.hw.drop.is_active  # a stuck or dirty sensor: it cannot see a drop
        self._drop_seen.clear()
        self._home_seen.clear()
        self._watching_home = slot if home is not None else None
        cutoff = threading.Timer(timeout_s + SAFETY_MARGIN_S, self.hw.all_off,
                                 kwargs={"why": f"slot {slot} ran past its time limit"})
        cutoff.daemon = True
        try:
            cutoff.start()
            motor.on()
            if home is not None:
                home_reached = self._home_seen.wait(timeout_s)
            else:
                self._home_seen.wait(self.gpio.turn_ms / 1000)  # nothing sets it: a timed turn
                home_reached = True
            motor.off()
            if not self._drop_seen.is_set():
                self._drop_seen.wait(self.gpio.drop_wait_ms / 1000)
        except BaseException:
            # a crash or power cut mid-turn: nothing runs on, and the outcome is unknowable
            self.hw.all_off(why=f"vend on slot {slot} interrupted")
            self.memory.forget_all(self._new_boot())
            raise
        finally:
            cutoff.cancel()
            self._watching_home = None
        if not home_reached:
            outcome = VendOutcome.MOTOR_STALLED
        elif beam_blocked or self.hw.drop.is_active:
            outcome = VendOutcome.UNCERTAIN
        elif self._drop_seen.is_set():
            outcome = VendOutcome.DROPPED
        else:
            outcome = VendOutcome.NOTHING_DROPPED
        self.memory.remember(seq, outcome)
        return outcome

    def recall(self, seq: int, boot_id: str | None) -> VendOutcome | None:
        # no board kept anything across a restart: a new process is a new boot, so what
        # the journal left open is unknowable (unconfirmed)
        return self.memory.recall(seq, boot_id)


class GpioLed:
    """The status light: on when ready, slow blink when busy, fast blink on a fault."""

    def __init__(self, device: DigitalOutputDevice | None) -> None:
        self.device = device
        self.state = LedState.OFF

    def set(self, state: LedState) -> None:
        self.state = state
        if self.device is None:
            return
        if state == LedState.READY:
            self.device.on()
        elif state == LedState.BUSY:
            self.device.blink(0.5, 0.5)
        elif state == LedState.FAULT:
            self.device.blink(0.15, 0.15)
        else:
            self.device.off()


class GpioHardware:
    """A machine wired to the Pi's GPIO header, as the ``[gpio]`` table describes it."""

    def __init__(self, gpio: GpioSettings, factory: Any,
                 temperature: Callable[[], float | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gpio, self.factory = gpio, factory
        self._temperature = temperature or _cpu_temperature
        self._sink: EventSink | None = None
        self._clock = clock
        self._last_edge: dict[int, float] = {}  # each button's last edge, for the debounce
        self._devices: list[Any] = []
        bounce = gpio.bounce_ms / 1000 or None
        try:
            self.motors = {slot: self._add(DigitalOutputDevice(
                n, active_high=gpio.motor_active_high, initial_value=False, pin_factory=factory))
                for slot, n in gpio.motors.items()}
            led = (self._add(DigitalOutputDevice(n, active_high=gpio.led_active_high,
                                                 initial_value=False, pin_factory=factory))
                   if (n := gpio.led) is not None else None)
            self.drop = self._add(_input(gpio.drop_sensor, gpio.drop_sensor_pull, factory, None))
            self.homes = {slot: self._add(_input(n, gpio.switches_pull, factory, None))
                          for slot, n in gpio.home_switches.items()}
            self.buttons = {b: self._add(_input(n, gpio.buttons_pull, factory, bounce))
                            for b, n in gpio.buttons.items()}
            self.door = (self._add(_input(gpio.door, gpio.switches_pull, factory, bounce))
                         if gpio.door is not None else None)
            self.bin = (self._add(_input(gpio.sharps_bin, gpio.switches_pull, factory, bounce))
                        if gpio.sharps_bin is not None else None)
        except BaseException:
            self.close()
            raise
        self.all_off(why=None)
        self.dispenser = GpioDispenser(self)
        self.display = FileDisplay(gpio.display_file)
        self.led = GpioLed(led)

    def _add(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    def all_off(self, why: str | None = "") -> None:
        """Every motor off, whatever else is going on (safe from any thread)."""
        for motor in getattr(self, "motors", {}).values():
            try:
                motor.off()
            except Exception:
                log.exception("could not switch a motor off")
        if why:
            log.warning("all motors off: %s", why)

    def start(self, sink: EventSink) -> None:
        self._sink = sink
        for button, device in self.buttons.items():
            device.when_activated = lambda button=button: self._button(button, True)
            device.when_deactivated = lambda button=button: self._button(button, False)
        if self.door is not None:
            self.door.when_activated = lambda: self._emit(DoorChanged(open=self.door_open()))
            self.door.when_deactivated = lambda: self._emit(DoorChanged(open=self.door_open()))
        if self.bin is not None:
            self.bin.when_activated = lambda: self._emit(SharpsBinChanged(full=self.sharps_bin_full()))
            self.bin.when_deactivated = lambda: self._emit(SharpsBinChanged(full=self.sharps_bin_full()))

    def _button(self, button: int, pressed: bool) -> None:
        """One press, one pack: an edge within ``bounce_ms`` of the button's last edge is the
        contacts bouncing (on the way down, or on letting go), not a press. Some pin factories
        filter bounce themselves and some (the mock's) do not; this holds for all of them."""
        now = self._clock()
        last = self._last_edge.get(button)
        self._last_edge[button] = now
        if pressed and (last is None or now - last >= self.gpio.bounce_ms / 1000):
            self._emit(ButtonPressed(button))

    def _emit(self, event: HardwareEvent) -> None:
        if self._sink is not None:
            self._sink(event)

    def door_open(self) -> bool:
        if self.door is None:
            return False
        return self.door.is_active == self.gpio.door_open_when_active

    def sharps_bin_full(self) -> bool:
        if self.bin is None:
            return False
        return self.bin.is_active == self.gpio.sharps_bin_full_when_active

    def temperature_c(self) -> float | None:
        return self._temperature()

    def close(self) -> None:
        self._sink = None
        self.all_off(why=None)
        for device in reversed(self._devices):
            try:
                if isinstance(device, DigitalOutputDevice):
                    device.off()  # the LED too: released pins keep their last level
                device.close()
            except Exception:
                log.exception("could not release %r", device)
        self._devices.clear()


def _cpu_temperature() -> float | None:
    """The Pi's own temperature: a hint of how hot the machine's box gets."""
    try:
        with open("/sys/class/thermal/thermal_zone0/temp") as f:
            return round(int(f.read()) / 1000, 1)
    except (OSError, ValueError):
        return None


def open_hardware(settings: GpioSettings) -> GpioHardware:
    """Open the pins of ``settings`` through its pin factory (gpiozero's mock pins with the
    simulator's world driving them are the ``gpio-mock`` backend, in simulator/)."""
    return GpioHardware(settings, make_pin_factory(settings.pin_factory))

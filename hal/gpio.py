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

import logging
import os
import threading
import uuid
from collections import OrderedDict
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice

from hal import (
    ButtonPressed,
    DoorChanged,
    EventSink,
    HardwareEvent,
    SharpsBinChanged,
    VendOutcome,
)

log = logging.getLogger(__name__)

MEMORY = 64
SAFETY_MARGIN_S = 0.25  # the independent cut-off fires this long after the vend's own limit


def make_pin_factory(name: str) -> Any:
    """gpiozero's pin factory called ``name`` (``lgpio`` on Raspberry Pi OS Bookworm)."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory
        return MockFactory()
    if name == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory
        return LGPIOFactory()
    if name == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory
        return RPiGPIOFactory()
    if name == "pigpio":
        from gpiozero.pins.pigpio import PiGPIOFactory
        return PiGPIOFactory()
    if name == "native":
        from gpiozero.pins.native import NativeFactory
        return NativeFactory()
    raise ValueError(f"unknown pin factory {name!r}")


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
        self._results: OrderedDict[int, VendOutcome] = OrderedDict()
        self._boot = uuid.uuid4().hex[:8]
        self._drop_seen = threading.Event()
        self._home_seen = threading.Event()
        self._watching_home: int | None = None
        hw.drop.when_activated = self._drop_edge
        for slot, home in hw.homes.items():
            home.when_activated = lambda slot=slot: self._home_edge(slot)

    def boot_id(self) -> str | None:
        return f"gpio-{os.getpid()}-{self._boot}"

    def _drop_edge(self) -> None:
        self._drop_seen.set()  # several edges from one pack are one drop: it is a flag

    def _home_edge(self, slot: int) -> None:
        if self._watching_home == slot:
            self._home_seen.set()

    def vend(self, slot: int, seq: int) -> VendOutcome:
        if seq in self._results:
            return self._results[seq]
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
            self._boot = uuid.uuid4().hex[:8]
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
        self._results[seq] = outcome
        while len(self._results) > MEMORY:
            self._results.popitem(last=False)
        return outcome

    def recall(self, seq: int, boot_id: str | None) -> VendOutcome | None:
        if seq in self._results:
            return self._results[seq]
        if boot_id == self.boot_id():
            return VendOutcome.NOT_RUN  # this process, uninterrupted, was never asked
        return None  # no board kept it across the restart: unconfirmed


class GpioLed:
    """The status light: on when ready, slow blink when busy, fast blink on a fault."""

    def __init__(self, device: DigitalOutputDevice | None) -> None:
        self.device = device
        self.state = "off"

    def set(self, state: str) -> None:
        self.state = state
        if self.device is None:
            return
        if state == "ready":
            self.device.on()
        elif state == "busy":
            self.device.blink(0.5, 0.5)
        elif state == "fault":
            self.device.blink(0.15, 0.15)
        else:
            self.device.off()


class GpioDisplay:
    """Lines of text; written to ``display_file`` (for a kiosk screen) when configured."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lines: list[str] = []

    def show(self, lines: list[str]) -> None:
        self.lines = list(lines)
        if self.path:
            tmp = f"{self.path}.tmp"
            try:
                with open(tmp, "w") as f:
                    f.write("\n".join(lines) + "\n")
                os.replace(tmp, self.path)
            except OSError as e:
                log.warning("cannot write the display file %s: %s", self.path, e)


class GpioHardware:
    """A machine wired to the Pi's GPIO header, as the ``[gpio]`` table describes it."""

    def __init__(self, gpio: Any, factory: Any, world: Any = None) -> None:
        self.gpio, self.factory, self.world = gpio, factory, world
        self._sink: EventSink | None = None
        self._control: Any = None  # the simulator's control socket (mock pins only)
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
        self.display = GpioDisplay(gpio.display_file)
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
            device.when_activated = lambda button=button: self._emit(ButtonPressed(button))
        if self.door is not None:
            self.door.when_activated = lambda: self._emit(DoorChanged(open=self.door_open()))
            self.door.when_deactivated = lambda: self._emit(DoorChanged(open=self.door_open()))
        if self.bin is not None:
            self.bin.when_activated = lambda: self._emit(SharpsBinChanged(full=self.sharps_bin_full()))
            self.bin.when_deactivated = lambda: self._emit(SharpsBinChanged(full=self.sharps_bin_full()))

    def press(self, button: int) -> None:
        """The simulator's hand on a button (mock pins only)."""
        if self.world is None:
            raise RuntimeError("only the mock pin factory has a simulated world to press")
        self.world.press(button)

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
        if self.world is not None:
            return self.world.model.temperature_c
        return _cpu_temperature()

    def close(self) -> None:
        self._sink = None
        self.all_off(why=None)
        if self._control is not None:
            self._control.close()
            self._control = None
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


def open_hardware(config: Any, model: Any = None, sleep: Any = None) -> GpioHardware:
    """Open the pins of ``config.gpio``; with ``pin_factory = "mock"`` the simulator's
    physical model (``model``, or a new one) is wired to the mock pins."""
    gpio = config.gpio
    factory = make_pin_factory(gpio.pin_factory)
    world = None
    if gpio.pin_factory == "mock":
        from simulator.gpio_world import GpioWorld
        from simulator.model import PhysicalMachine

        if model is None:
            model = PhysicalMachine(max(gpio.motors), turn_s=config.sim_motor_s, drop_s=0.0)
        turn_s = config.sim_motor_s or (model.turn_s if sleep is not None else 0.0)
        world = GpioWorld(model, factory, gpio, turn_s=turn_s)
    hw = GpioHardware(gpio, factory, world)
    if world is not None:
        world.connect()
    if world is not None and config.sim_control:
        from simulator.control import SimulatorControl

        hw._control = SimulatorControl(config.sim_control, world.model, hw.press)
    return hw

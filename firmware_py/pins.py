"""The pin layer: everything the board logic asks of hardware, and two makers of it.

``HardwarePins`` drives a real Pico through ``machine.Pin``. ``TimedPins`` plays
a physical world in time (motor on -> the spiral leaves home, a pack falls past
the beam, the spiral comes home), for the board simulator and the bench.
"""

from firmware_py.ticks import ticks_diff, ticks_ms


class HardwarePins:
    """Real pins, from ``pinmap``."""

    def __init__(self, pinmap):
        from machine import Pin  # only on the board

        self.map = pinmap
        self.motors = [Pin(n, Pin.OUT, value=0) for n in pinmap.MOTORS]
        self.homes = [Pin(n, Pin.IN, Pin.PULL_UP) for n in pinmap.HOME_SWITCHES]
        self.buttons = [Pin(n, Pin.IN, Pin.PULL_UP) for n in pinmap.BUTTONS]
        self.beam_pin = Pin(pinmap.DROP_BEAM, Pin.IN, Pin.PULL_DOWN)
        self.door_pin = Pin(pinmap.DOOR, Pin.IN, Pin.PULL_DOWN)
        self.bin_pin = Pin(pinmap.SHARPS_BIN, Pin.IN, Pin.PULL_UP)
        self.led_pin = Pin(pinmap.STATUS_LED, Pin.OUT, value=0)
        self.lcd = None
        try:
            from machine import I2C

            from firmware_py.lcd import Lcd

            bus = I2C(pinmap.LCD_I2C, sda=Pin(pinmap.LCD_SDA), scl=Pin(pinmap.LCD_SCL),
                      freq=100000)
            self.lcd = Lcd(bus, pinmap.LCD_ADDRESS)
        except OSError:
            self.lcd = None  # no LCD fitted: the machine works without one

    def slot_count(self):
        return len(self.motors)

    def button_count(self):
        return len(self.buttons)

    def motor(self, slot, on):
        for i, pin in enumerate(self.motors):  # never two motors at once
            pin.value(1 if (on and i == slot - 1) else 0)

    def all_off(self):
        for pin in self.motors:
            pin.value(0)

    def home(self, slot):
        return self.homes[slot - 1].value() == 0

    def beam(self):
        return self.beam_pin.value() == 1

    def button(self, n):
        return self.buttons[n - 1].value() == 0

    def door(self):
        return self.door_pin.value() == 1

    def bin_full(self):
        return self.bin_pin.value() == 0

    def temperature(self):
        return None

    def led(self, state):
        self.led_pin.value(0 if state == "off" else 1)

    def show(self, lines):
        if self.lcd is not None:
            try:
                self.lcd.show(lines)
            except OSError:
                pass  # no LCD answers on the bus: the machine still vends

    def glyph(self, code, rows):
        if self.lcd is not None:
            try:
                self.lcd.glyph(code, rows)
            except OSError:
                pass


class TimedPins:
    """Pins played by a *world* in time.

    The world knows the physical truth: ``plan_turn(slot)`` -> (home_reached,
    will_drop), ``drop(slot)`` when a pack really falls, and the attributes
    ``sensor_stuck``, ``door_open``, ``sharps_bin_full``, ``temperature_c``.
    ``turn_ms`` is how long a spiral takes; a pack falls past the beam at
    ``drop_at`` of the turn and blocks it for ``beam_ms``.
    """

    def __init__(self, world, slots, buttons, turn_ms=1200, beam_ms=30, drop_at=0.6, lcd=None):
        self.world = world
        self.lcd = lcd  # a firmware_py.lcd.Lcd on a recording bus (the bench), or None
        self.glyphs = {}  # custom characters the host loaded, by code
        self.slots = slots
        self.buttons = buttons
        self.turn_ms = turn_ms
        self.beam_ms = beam_ms
        self.drop_at = drop_at
        self.running = {}  # slot -> [started, home_reached, will_drop, dropped]
        self.falls = []  # when packs fell past the beam, recent first
        self.pressed = {}  # button -> when
        self.lines = []
        self.led_state = "off"
        self.press_ms = 150  # how long a simulated finger holds a button

    def press(self, button):
        self.pressed[button] = ticks_ms()

    def slot_count(self):
        return self.slots

    def button_count(self):
        return self.buttons

    def motor(self, slot, on):
        if on and slot not in self.running:
            home_reached, will_drop = self.world.plan_turn(slot)
            self.running[slot] = [ticks_ms(), home_reached, will_drop, None]
        elif not on and slot in self.running:
            self._advance(slot)
            del self.running[slot]

    def all_off(self):
        for slot in list(self.running):
            self.motor(slot, False)

    def motor_on(self, slot):
        return slot in self.running

    def _advance(self, slot):
        """Let the pack fall if its moment has come while the motor still turns."""
        run = self.running[slot]
        now = ticks_ms()
        if run[2] and not run[3] and ticks_diff(now, run[0]) >= self.turn_ms * self.drop_at:
            run[3] = True
            self.falls.insert(0, now)
            del self.falls[4:]
            self.world.drop(slot)

    def home(self, slot):
        run = self.running.get(slot)
        if run is None:
            return True
        self._advance(slot)
        return run[1] and ticks_diff(ticks_ms(), run[0]) >= self.turn_ms

    def beam(self):
        if self.world.sensor_stuck:
            return True
        for slot in list(self.running):
            self._advance(slot)
        now = ticks_ms()
        for fell in self.falls:
            if ticks_diff(now, fell) < self.beam_ms:
                return True
        return False

    def button(self, n):
        when = self.pressed.get(n)
        return when is not None and ticks_diff(ticks_ms(), when) < self.press_ms

    def door(self):
        return self.world.door_open

    def bin_full(self):
        return self.world.sharps_bin_full

    def temperature(self):
        return self.world.temperature_c

    def led(self, state):
        self.led_state = state

    def show(self, lines):
        self.lines = lines
        if self.lcd is not None:
            self.lcd.show(lines)

    def glyph(self, code, rows):
        self.glyphs[code] = list(rows)
        if self.lcd is not None:
            self.lcd.glyph(code, rows)

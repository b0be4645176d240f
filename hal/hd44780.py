"""A character LCD (HD44780, 20x4 by default) on an I2C PCF8574 backpack, through RPLCD.

Latin letters only: accents are folded to what the character ROM has (``hal.screens.fold``);
a screen is fitted to the display's size (``hal.screens.fit``), so nothing runs past the
edge and no word is cut.
"""

from __future__ import annotations

import logging
from typing import Any

from hal.screens import Screen, fit, fold
from hal.settings import DisplaySettings

log = logging.getLogger(__name__)


def render(screen: Screen, cols: int, rows: int) -> list[str]:
    """The lines a ``cols`` x ``rows`` character display shows for ``screen``."""
    return fit([fold(p) for p in screen.paragraphs], cols, rows)


class CharacterLcd:
    """The LCD; ``bus`` is an SMBus-like object (smbus2's, or a test's)."""

    def __init__(self, settings: DisplaySettings, bus: Any = None) -> None:
        from RPLCD.i2c import CharLCD

        class Lcd(CharLCD):
            def _init_connection(self) -> None:
                if bus is None:
                    super()._init_connection()  # smbus2's bus on the Pi's I2C port
                else:
                    self.bus = bus  # a test's bus

        self.settings = settings
        self.lines: list[str] = []
        self.lcd = Lcd("PCF8574", settings.i2c_address, port=settings.i2c_port,
                       cols=settings.cols, rows=settings.rows, charmap="A00",
                       auto_linebreaks=False, backlight_enabled=True)
        self.lcd.clear()

    def show(self, screen: Screen) -> None:
        lines = render(screen, self.settings.cols, self.settings.rows)
        if lines == self.lines:
            return
        self.lines = lines
        try:
            self.lcd.clear()
            for row, line in enumerate(lines):
                self.lcd.cursor_pos = (row, 0)
                self.lcd.write_string(line)
        except OSError as e:  # a loose cable must not stop a vend
            log.warning("the LCD did not take the screen: %s", e)

    def close(self) -> None:
        try:
            self.lcd.clear()
            self.lcd.close(clear=True)
        except OSError:
            pass

"""A character LCD (HD44780, 20x4 by default) on an I2C PCF8574 backpack, through RPLCD.

Latin letters: what the A00 character ROM has is shown as it is (ä ñ ö ü); the letters of
the screen it lacks (ı ş ğ, ą ł ż, ã õ ...) and the hints' globe and speaker go into its
eight custom characters, page by page (``hal.glyphs``); a letter is folded to the nearest
the ROM has (``hal.screens.fold``) only when a page needs more than eight. A screen is laid
out in pages (``hal.screens.pages``): nothing runs past the edge, no word is cut, nothing is
left out.
"""

from __future__ import annotations

import logging
from typing import Any

from hal.glyphs import ROM, drawable, glyph
from hal.screens import PagedDisplay, Screen, fold, hint_line, pages
from hal.settings import DisplaySettings

log = logging.getLogger(__name__)


def render_pages(screen: Screen, cols: int, rows: int) -> list[list[str]]:
    """The pages of lines a ``cols`` x ``rows`` character display shows for ``screen``, in
    the letters it can show (the hints' symbols as their marks), the hints right after the
    headline."""
    paragraphs = [_showable(p) for p in screen.paragraphs]
    if screen.hints:
        paragraphs.insert(1 if paragraphs else 0, hint_line(screen.hints))
    return pages(paragraphs, cols, rows)


def _showable(text: str) -> str:
    """``text`` with each letter the LCD cannot show in any way folded."""
    return "".join(ch if drawable(ch) else fold(ch) for ch in text)


def custom(lines: list[str]) -> tuple[list[str], list[list[int]]]:
    """``lines`` for the LCD itself: letters beyond its ROM as custom characters 0..7 (the
    first eight of the page, in order), the rest folded; and the patterns to load."""
    wanted: list[str] = []
    for ch in "".join(lines):
        if not (" " <= ch <= "~" or ch in ROM) and ch not in wanted:
            wanted.append(ch)
    codes = {ch: chr(i) for i, ch in enumerate(wanted[:8])}
    out = ["".join(codes.get(ch) or (ch if " " <= ch <= "~" or ch in ROM else fold(ch))
                   for ch in line) for line in lines]
    return out, [glyph(ch) for ch in wanted[:8]]


class CharacterLcd(PagedDisplay):
    """The LCD; ``bus`` is an SMBus-like object (smbus2's, or a test's)."""

    def __init__(self, settings: DisplaySettings, bus: Any = None) -> None:
        from RPLCD.i2c import CharLCD

        class Lcd(CharLCD):
            def _init_connection(self) -> None:
                if bus is None:
                    super()._init_connection()  # smbus2's bus on the Pi's I2C port
                else:
                    self.bus = bus  # a test's bus

        super().__init__()
        self.settings = settings
        self.lines: list[str] = []
        self.lcd = Lcd("PCF8574", settings.i2c_address, port=settings.i2c_port,
                       cols=settings.cols, rows=settings.rows, charmap="A00",
                       auto_linebreaks=False, backlight_enabled=True)
        self.lcd.clear()

    def layout(self, screen: Screen) -> list[list[str]]:
        return render_pages(screen, self.settings.cols, self.settings.rows)

    def put(self, lines: list[str]) -> None:
        if lines == self.lines:
            return
        self.lines = lines
        coded, patterns = custom(lines)
        try:
            for code, pattern in enumerate(patterns):
                self.lcd.create_char(code, tuple(pattern))
            self.lcd.clear()
            for row, line in enumerate(coded):
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

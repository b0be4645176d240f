"""Which display shows the client's screens (``[display] kind``), and the simple ones.

``auto`` keeps the wiring's own (the board's LCD, the gpio wiring's file, the simulator's
screen); ``hd44780`` and the graphic kinds are their own modules; ``file`` writes the
lines for a kiosk's screen to read; ``none`` shows nothing.
"""

from __future__ import annotations

import logging
import os

from hal import Display
from hal.screens import Screen
from hal.settings import DisplaySettings

log = logging.getLogger(__name__)


def open_display(settings: DisplaySettings, wiring: Display) -> Display:
    """The display ``settings`` ask for; ``wiring`` is the wiring's own."""
    if settings.kind == "hd44780":
        from hal.hd44780 import CharacterLcd

        return CharacterLcd(settings)
    if settings.kind in ("st7789", "ili9341"):
        from hal.graphic import GraphicScreen

        return GraphicScreen(settings)
    if settings.kind == "file":
        return FileDisplay(settings.file)
    if settings.kind == "none":
        return FileDisplay(None)
    return wiring


class FileDisplay:
    """The screen's paragraphs, one a line, in a file a kiosk's screen reads (or nowhere)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lines: list[str] = []
        self.screen: Screen | None = None

    def show(self, screen: Screen) -> int:
        self.screen, self.lines = screen, screen.lines
        if not self.path:
            return 1
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write("\n".join(self.lines) + "\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot write the display file %s: %s", self.path, e)
        return 1

    def turn_page(self) -> None:
        """A kiosk's screen shows every paragraph at once: no pages."""

"""A graphic screen (ST7789 or ILI9341 class, on SPI) through luma.lcd: large text in a font
that covers the shipped languages (DejaVu; Noto for Bengali, from Debian's packages), a
pictogram of the product or of what is happening, high contrast.

:func:`render` draws a screen as a Pillow image; :class:`GraphicScreen` puts it on the
device (luma's own ``dummy`` device stands in for one in tests and ``nspvend screens``).
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from hal.screens import Screen
from hal.settings import DisplaySettings

log = logging.getLogger(__name__)

FONTS = Path("/usr/share/fonts/truetype")
FONT_FILES = {
    "default": (FONTS / "dejavu" / "DejaVuSans-Bold.ttf", FONTS / "dejavu" / "DejaVuSans.ttf"),
    "bn": (FONTS / "noto" / "NotoSansBengali-Bold.ttf", FONTS / "noto" / "NotoSansBengali-Regular.ttf"),
}
BACKGROUND, HEADLINE, TEXT, ICON = (0, 0, 0), (255, 214, 0), (255, 255, 255), (120, 200, 255)
MARGIN = 8


def script_of(text: str) -> str:
    """Which font ``text`` is set in: ``bn`` for Bengali letters, else the default."""
    return "bn" if any("\u0980" <= ch <= "\u09ff" for ch in text) else "default"


@functools.cache
def font(language: str, bold: bool, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    files = FONT_FILES.get(language, FONT_FILES["default"])
    path = files[0] if bold else files[1]
    try:
        return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.RAQM
                                  if language == "bn" else ImageFont.Layout.BASIC)
    except OSError:
        log.warning("font %s is missing (apt install fonts-dejavu-core fonts-noto-core)", path)
        return ImageFont.load_default(size)


@functools.cache
def has_glyph(face: Any, ch: str) -> bool:
    """Whether ``face`` draws ``ch`` as itself rather than as its missing-letter box."""
    if ch.isspace():
        return True
    missing = face.getmask("\ue000")  # a private-use letter no shipped font has
    drawn = face.getmask(ch)
    return (drawn.size, bytes(drawn)) != (missing.size, bytes(missing))


class Mixed:
    """A Bengali font with DejaVu behind it, for paragraphs that mix scripts: staff's
    messages, product names and the hub's address in English on a Bengali screen. Each run of
    letters is set in the first font that has them, on a shared baseline; measures like a
    Pillow font for :func:`wrap_pixels` and :func:`layout`."""

    def __init__(self, *faces: Any) -> None:
        self.faces = faces

    def runs(self, text: str) -> list[tuple[Any, str]]:
        out: list[tuple[Any, str]] = []
        for ch in text:
            if ch.isspace() and out:
                face = out[-1][0]
            else:
                face = next((f for f in self.faces if has_glyph(f, ch)), self.faces[0])
            if out and out[-1][0] is face:
                out[-1] = (face, out[-1][1] + ch)
            else:
                out.append((face, ch))
        return out

    def getlength(self, text: str) -> float:
        return sum(face.getlength(run) for face, run in self.runs(text))

    def getmetrics(self) -> tuple[int, int]:
        metrics = [face.getmetrics() for face in self.faces]
        return max(a for a, _ in metrics), max(d for _, d in metrics)

    def draw(self, draw: ImageDraw.ImageDraw, x: float, y: float, text: str, fill: Any) -> None:
        baseline = y + self.getmetrics()[0]
        for face, run in self.runs(text):
            draw.text((x, baseline), run, font=face, fill=fill, anchor="ls")
            x += face.getlength(run)


def face_for(text: str, bold: bool, size: int) -> Any:
    """The font ``text`` is drawn in: DejaVu, or for Bengali a :class:`Mixed` of Noto's
    Bengali and DejaVu (Noto's Bengali face has no Latin letters)."""
    if script_of(text) == "default":
        return font("default", bold, size)
    return Mixed(font(script_of(text), bold, size), font("default", bold, size))


def wrap_pixels(text: str, face: Any, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken between words."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if current and face.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def layout(screen: Screen, width: int, height: int) -> tuple[bool, list[tuple[int, Any, list[str], int]]]:
    """Where things go: whether the pictogram is drawn, and ``(paragraph index, font, lines,
    top)`` for each paragraph that fits whole, in order. The first paragraph is always
    there: its font shrinks, and then the pictogram goes, until it fits."""
    big, small = max(14, height // 9), max(12, height // 13)
    for with_pictogram in ((True, False) if screen.pictogram else (False,)):
        top = MARGIN + (height // 4 + MARGIN if with_pictogram else 0)
        for size in range(big, small - 1, -2):
            placed = _place(screen, width, height, top, size, small)
            if placed and placed[0][0] == 0:
                return with_pictogram, placed
    return False, _place(screen, width, height, MARGIN, small, small)


def _place(screen: Screen, width: int, height: int, y: int, first_size: int,
           size: int) -> list[tuple[int, Any, list[str], int]]:
    placed = []
    for i, paragraph in enumerate(screen.paragraphs):
        face = face_for(paragraph, i == 0, first_size if i == 0 else size)
        lines = wrap_pixels(paragraph, face, width - 2 * MARGIN)
        ascent, descent = face.getmetrics()
        step = ascent + descent + 2
        if any(face.getlength(line) > width - 2 * MARGIN for line in lines):
            continue  # a single word wider than the screen: leave the paragraph out
        if y + step * len(lines) > height - MARGIN:
            continue
        placed.append((i, face, lines, y))
        y += step * len(lines) + step // 3
    return placed


def render(screen: Screen, width: int, height: int) -> Image.Image:
    """``screen`` drawn for a ``width`` x ``height`` screen: a pictogram, the first paragraph
    large, the rest smaller (:func:`layout`)."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    with_pictogram, placed = layout(screen, width, height)
    if with_pictogram:
        size = height // 4
        pictogram(draw, screen.pictogram, (width - size) // 2, MARGIN, size)
    for i, face, lines, y in placed:
        ascent, descent = face.getmetrics()
        for line in lines:
            x, fill = (width - face.getlength(line)) / 2, HEADLINE if i == 0 else TEXT
            if isinstance(face, Mixed):
                face.draw(draw, x, y, line, fill)
            else:
                draw.text((x, y), line, font=face, fill=fill)
            y += ascent + descent + 2
    return image


def pictogram(draw: ImageDraw.ImageDraw, name: str, x: int, y: int, size: int) -> None:
    """A simple drawing for a product or a state, in a ``size`` square at (x, y)."""
    s, c = size, ICON
    w = max(2, s // 14)
    if name.startswith("syringe"):
        draw.rectangle((x + s * .15, y + s * .42, x + s * .7, y + s * .58), outline=c, width=w)
        draw.line((x + s * .7, y + s * .5, x + s * .95, y + s * .5), fill=c, width=w)
        draw.line((x + s * .05, y + s * .5, x + s * .15, y + s * .5), fill=c, width=w)
        draw.line((x + s * .05, y + s * .38, x + s * .05, y + s * .62), fill=c, width=w)
    elif name == "foil":
        draw.rectangle((x + s * .15, y + s * .2, x + s * .85, y + s * .8), outline=c, width=w)
        for k in range(3):
            yy = y + s * (.35 + .15 * k)
            draw.line([(x + s * (.2 + .1 * j), yy + (s * .04 if j % 2 else 0)) for j in range(7)],
                      fill=c, width=w)
    elif name in ("naloxone", "wound-care"):
        draw.rectangle((x + s * .4, y + s * .15, x + s * .6, y + s * .85), fill=c)
        draw.rectangle((x + s * .15, y + s * .4, x + s * .85, y + s * .6), fill=c)
    elif name in ("water", "citric", "bbv-test"):
        draw.ellipse((x + s * .25, y + s * .35, x + s * .75, y + s * .85), outline=c, width=w)
        draw.polygon([(x + s * .5, y + s * .1), (x + s * .29, y + s * .5), (x + s * .71, y + s * .5)],
                     outline=c, width=w)
    elif name == "sharps-bin":
        draw.rectangle((x + s * .2, y + s * .3, x + s * .8, y + s * .9), outline=c, width=w)
        draw.rectangle((x + s * .15, y + s * .2, x + s * .85, y + s * .3), fill=c)
    elif name == "thanks":
        draw.line([(x + s * .2, y + s * .55), (x + s * .42, y + s * .78), (x + s * .82, y + s * .25)],
                  fill=(90, 220, 90), width=w * 2)
    elif name == "sorry":
        draw.ellipse((x + s * .15, y + s * .15, x + s * .85, y + s * .85), outline=(255, 120, 90),
                     width=w)
        draw.line((x + s * .35, y + s * .35, x + s * .65, y + s * .65), fill=(255, 120, 90), width=w)
        draw.line((x + s * .65, y + s * .35, x + s * .35, y + s * .65), fill=(255, 120, 90), width=w)
    elif name == "service":
        cx, cy, r = x + s / 2, y + s / 2, s * .3
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=c, width=w)
        for k in range(8):
            a = k * math.pi / 4
            draw.line((cx + r * math.cos(a), cy + r * math.sin(a), cx + r * 1.4 * math.cos(a),
                       cy + r * 1.4 * math.sin(a)), fill=c, width=w)
    else:  # any other product: a circle with its initials
        draw.ellipse((x + s * .1, y + s * .1, x + s * .9, y + s * .9), outline=c, width=w)
        initials = "".join(part[0] for part in name.split("-")[:2]).upper()
        face = font("en", True, int(s * .35))
        draw.text((x + (s - face.getlength(initials)) / 2, y + s * .3), initials, font=face, fill=c)


class GraphicScreen:
    """The screen on SPI (``device`` given: any luma device, such as luma's ``dummy``)."""

    def __init__(self, settings: DisplaySettings, device: Any = None) -> None:
        self.settings = settings
        if device is None:
            from luma.core.interface.serial import spi
            from luma.lcd import device as lcd

            interface = spi(port=settings.spi_port, device=settings.spi_device,
                            gpio_DC=settings.gpio_dc, gpio_RST=settings.gpio_reset)
            make = lcd.st7789 if settings.kind == "st7789" else lcd.ili9341
            device = make(interface, width=settings.width, height=settings.height,
                          rotate=settings.rotate)
        self.device = device
        self.image: Image.Image | None = None

    def show(self, screen: Screen) -> None:
        self.image = render(screen, self.device.width, self.device.height)
        try:
            self.device.display(self.image.convert(self.device.mode))
        except OSError as e:  # a loose cable must not stop a vend
            log.warning("the screen did not take the picture: %s", e)

    def close(self) -> None:
        try:
            self.device.cleanup()
        except (OSError, AttributeError):
            pass

"""A graphic screen (ST7789 or ILI9341 class, on SPI) through luma.lcd: large text in a font
that covers the shipped languages (DejaVu; Noto for Bengali, from Debian's packages), a
pictogram of the product or of what is happening, high contrast.

:func:`render` draws a screen as a Pillow image; :class:`GraphicScreen` puts it on the
device (luma's own ``dummy`` device stands in for one in tests and ``nspvend screens``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from hal.screens import PagedDisplay, Screen
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
    """``text`` in lines no wider than ``width`` pixels, broken between words; a word wider
    than a whole line is cut and marked "-" (the one way a word is ever split)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        while face.getlength(word) > width and len(word) > 1:
            if current:
                lines.append(current)
                current = ""
            cut = len(word) - 1
            while cut > 1 and face.getlength(word[:cut] + "-") > width:
                cut -= 1
            lines.append(word[:cut] + "-")
            word = word[cut:]
        trial = f"{current} {word}" if current else word
        if current and face.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


Placed = list[tuple[int, Any, list[str], int]]  # (paragraph index, font, lines, top) each
Page = tuple[bool, Placed]  # whether the pictogram is drawn, and the paragraphs placed


def layout_pages(screen: Screen, width: int, height: int) -> list[Page]:
    """Where things go, page by page. The whole screen on one page if it fits there with the
    pictogram, the headline shrinking first; else pages, each with the pictogram (when there
    is room for it), the headline at its smallest, and as many of the other paragraphs as
    fit whole, a paragraph too long for a page continued on the next. Nothing is left out."""
    big, small = max(14, height // 9), max(12, height // 13)
    height -= hints_height(screen, height)  # the hints' row is at the foot of every page
    icon = bool(screen.pictogram)
    tops = {True: MARGIN + pictogram_size(height) + MARGIN, False: MARGIN}
    items = [(i, p) for i, p in enumerate(screen.paragraphs) if p.strip()]
    if not items:
        return [(icon, [])]
    for size in range(big, small - 1, -2):
        placed = _place(items, width, height, tops[icon], size, small)
        if placed is not None:
            return [(icon, placed)]
    head, rest, out = [items[0]], items[1:], []
    # the first page has the pictogram (a crossed one says "nothing here" to anyone) and the
    # headline, and what fits whole beside them; later pages the headline and the rest
    icon = icon and _place(head, width, height, tops[True], small, small) is not None
    if not rest:
        return [(icon, _place(head, width, height, tops[icon], small, small) or [])]
    while rest:
        first = not out
        with_icon = icon and first
        top = tops[with_icon]
        for n in range(len(rest), 0, -1):
            placed = _place(head + rest[:n], width, height, top, small, small)
            if placed is not None:
                out.append((with_icon, placed))
                rest = rest[n:]
                break
        else:
            if first and head:  # the pictogram and the headline alone; the rest follows
                out.append((with_icon, _place(head, width, height, top, small, small) or []))
                continue
            part, *more = _split(rest[0], head, width, height, top, small)
            if part[1] == "":  # not a line of it beside the headline: the headline goes
                head = []
                continue
            rest = [part, *more, *rest[1:]]
    return out


def _split(item: tuple[int, str], head: list, width: int, height: int, top: int,
           size: int) -> list[tuple[int, str]]:
    """``item`` as two paragraphs: the lines that fit on a page under ``head``, and the rest
    (``(i, "")`` first if not one line does)."""
    i, text = item
    lines = wrap_pixels(text, face_for(text, False, size), width - 2 * MARGIN)
    for k in range(len(lines) - 1, 0, -1):
        if _place(head + [(i, " ".join(lines[:k]))], width, height, top, size, size):
            return [(i, " ".join(lines[:k])), (i, " ".join(lines[k:]))]
    return [(i, ""), item] if head else [(i, lines[0]), (i, " ".join(lines[1:]))]


def hints_height(screen: Screen, height: int) -> int:
    """The row the hints (a globe, a speaker, each with its button's number) take."""
    return height // 6 if screen.hints else 0


def pictogram_size(height: int) -> int:
    """At least 96 px on a 240 px screen: a person knows it at a glance."""
    return max(48, height * 2 // 5)


def _place(items: list[tuple[int, str]], width: int, height: int, y: int, first_size: int,
           size: int) -> Placed | None:
    """Every one of ``items`` placed from ``y`` down (the first at ``first_size`` if it is
    the headline), or None if they do not all fit."""
    placed = []
    for i, paragraph in items:
        face = face_for(paragraph, i == 0, first_size if i == 0 else size)
        lines = wrap_pixels(paragraph, face, width - 2 * MARGIN)
        ascent, descent = face.getmetrics()
        step = ascent + descent + 2
        if y + step * len(lines) > height - MARGIN:
            return None
        placed.append((i, face, lines, y))
        y += step * len(lines) + step // 3
    return placed


def render_pages(screen: Screen, width: int, height: int) -> list[Image.Image]:
    """``screen`` drawn for a ``width`` x ``height`` screen, page by page: a pictogram, the
    headline large and yellow, the rest smaller (:func:`layout_pages`)."""
    return [_draw(screen, width, height, page) for page in layout_pages(screen, width, height)]


def _draw(screen: Screen, width: int, height: int, page: Page) -> Image.Image:
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    with_pictogram, placed = page
    if with_pictogram:
        size = pictogram_size(height)
        pictogram(draw, screen.pictogram, (width - size) // 2, MARGIN, size)
        if screen.crossed:
            cross(draw, (width - size) // 2, MARGIN, size)
    if screen.hints:
        draw_hints(draw, screen.hints, width, height)
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


def draw_hints(draw: ImageDraw.ImageDraw, hints: tuple[tuple[str, int], ...], width: int,
               height: int) -> None:
    """The ways out that need no reading, at the foot: a globe and the language button's
    number, a speaker and the say-again button's."""
    row = height // 6
    size = row - 6
    face = font("default", True, int(size * .8))
    items = [(kind, str(button)) for kind, button in hints]
    item_w = size + 6 + max(face.getlength(n) for _, n in items)
    gap = size
    x = (width - (item_w * len(items) + gap * (len(items) - 1))) / 2
    y = height - row + 3
    for kind, number in items:
        pictogram(draw, "globe" if kind == "language" else "speaker", int(x), y, size)
        draw.text((x + size + 6, y + size * .05), number, font=face, fill=HEADLINE)
        x += item_w + gap


def cross(draw: ImageDraw.ImageDraw, x: int, y: int, size: int) -> None:
    """A red cross over a pictogram: nothing of it can be given now."""
    w, red = max(4, size // 10), (235, 60, 50)
    draw.line((x + size * .1, y + size * .1, x + size * .9, y + size * .9), fill=red, width=w)
    draw.line((x + size * .9, y + size * .1, x + size * .1, y + size * .9), fill=red, width=w)


KINDS = (("syringe", "syringe"), ("needle", "syringe"), ("foil", "foil"), ("citric", "spoon"),
         ("spoon", "spoon"), ("cooker", "spoon"), ("filter", "filter"), ("water", "ampoule"),
         ("naloxone", "naloxone"), ("wound", "plaster"), ("swab", "plaster"),
         ("sharps", "sharps-bin"), ("bin", "sharps-bin"), ("bbv", "test"), ("test", "test"),
         ("condom", "condom"))


def kind_of(name: str) -> str:
    """Which drawing a product id gets (``syringe-1ml`` -> ``syringe``); a state's own name."""
    return next((kind for prefix, kind in KINDS if name.startswith(prefix)), name)


def pictogram(draw: ImageDraw.ImageDraw, name: str, x: int, y: int, size: int) -> None:
    """A drawing a person knows at a glance, one shape per kind of product (syringe, foil,
    spoon, filter, water ampoule, naloxone kit, plaster, sharps bin, test, condom) or state
    (a pack, a tick, a wrench; a globe and a speaker for the hints), in a ``size`` square."""
    s, c = size, ICON
    w = max(2, s // 16)

    def box(x0: float, y0: float, x1: float, y1: float, **kw: Any) -> None:
        draw.rectangle((x + s * x0, y + s * y0, x + s * x1, y + s * y1), **kw)

    def line(*points: tuple[float, float], width: int = w, fill: Any = c) -> None:
        draw.line([(x + s * px, y + s * py) for px, py in points], fill=fill, width=width)

    def oval(x0: float, y0: float, x1: float, y1: float, **kw: Any) -> None:
        draw.ellipse((x + s * x0, y + s * y0, x + s * x1, y + s * y1), **kw)

    kind = kind_of(name)
    if kind == "syringe":  # barrel with marks, plunger, needle: on a slant
        line((.08, .92), (.2, .8), width=w * 2)  # plunger's thumb rest
        line((.14, .86), (.32, .68), width=w)  # plunger rod
        draw.polygon([(x + s * .28, y + s * .56), (x + s * .44, y + s * .72),
                      (x + s * .78, y + s * .38), (x + s * .62, y + s * .22)], outline=c, width=w)
        for k in range(3):
            f = .42 + .1 * k
            line((f - .02, .6 - (f - .42)), (f + .04, .66 - (f - .42)), width=max(1, w // 2))
        line((.72, .28), (.95, .05), width=max(2, w // 2))  # needle
    elif kind == "foil":  # a crinkled sheet with a folded corner
        draw.polygon([(x + s * .15, y + s * .2), (x + s * .7, y + s * .2), (x + s * .85, y + s * .35),
                      (x + s * .85, y + s * .8), (x + s * .15, y + s * .8)], outline=c, width=w)
        line((.7, .2), (.7, .35), (.85, .35))
        for k in range(3):
            yy = .4 + .13 * k
            line(*[(.22 + .09 * j, yy + (.04 if j % 2 else 0)) for j in range(7)])
    elif kind == "spoon":  # a spoon (citric and cooking): bowl and handle
        oval(.1, .3, .48, .62, outline=c, width=w)
        line((.46, .5), (.92, .7), width=w * 2)
    elif kind == "filter":  # a round filter with its mesh
        oval(.15, .15, .85, .85, outline=c, width=w)
        for k in range(1, 4):
            line((.15 + .175 * k, .2), (.15 + .175 * k, .8), width=max(1, w // 2))
            line((.2, .15 + .175 * k), (.8, .15 + .175 * k), width=max(1, w // 2))
    elif kind == "ampoule":  # water for injection: a vial with a narrow neck and a drop
        box(.35, .45, .65, .9, outline=c, width=w)
        line((.35, .45), (.45, .33), (.45, .2))
        line((.65, .45), (.55, .33), (.55, .2))
        box(.42, .1, .58, .2, fill=c)
        oval(.44, .6, .56, .75, fill=c)
    elif kind == "naloxone":  # a kit case with a handle and a heart line: it saves a life
        box(.12, .32, .88, .85, outline=c, width=w)
        draw.arc((x + s * .35, y + s * .15, x + s * .65, y + s * .45), 180, 360, fill=c, width=w)
        line((.2, .6), (.38, .6), (.45, .45), (.55, .75), (.62, .6), (.8, .6))
    elif kind == "plaster":  # wound care: a plaster, its pad in the middle
        draw.rounded_rectangle((x + s * .08, y + s * .35, x + s * .92, y + s * .65),
                               radius=s * .12, outline=c, width=w)
        box(.38, .38, .62, .62, fill=c)
    elif kind == "sharps-bin":  # a bin with its lid and the slot for needles
        box(.2, .32, .8, .9, outline=c, width=w)
        box(.14, .2, .86, .32, fill=c)
        box(.35, .24, .65, .28, fill=BACKGROUND)
        draw.polygon([(x + s * .5, y + s * .45), (x + s * .36, y + s * .75), (x + s * .64, y + s * .75)],
                     outline=c, width=w)
    elif kind == "test":  # a test cassette: its window and two lines
        draw.rounded_rectangle((x + s * .3, y + s * .08, x + s * .7, y + s * .92), radius=s * .08,
                               outline=c, width=w)
        box(.4, .3, .6, .62, outline=c, width=w)
        line((.42, .4), (.58, .4))
        line((.42, .52), (.58, .52))
        oval(.44, .72, .56, .84, outline=c, width=w)
    elif kind == "condom":  # a square wrapper with the ring inside
        box(.15, .15, .85, .85, outline=c, width=w)
        oval(.3, .3, .7, .7, outline=c, width=w)
        oval(.4, .4, .6, .6, outline=c, width=max(1, w // 2))
    elif kind == "pack":  # any pack: a box with its flaps (crossed when none can be given)
        draw.polygon([(x + s * .15, y + s * .35), (x + s * .5, y + s * .2), (x + s * .85, y + s * .35),
                      (x + s * .85, y + s * .8), (x + s * .5, y + s * .95), (x + s * .15, y + s * .8)],
                     outline=c, width=w)
        line((.15, .35), (.5, .5), (.85, .35))
        line((.5, .5), (.5, .95))
    elif kind == "thanks":
        line((.15, .55), (.4, .8), (.88, .22), width=w * 2, fill=(90, 220, 90))
    elif kind == "service":  # a wrench: being restocked
        oval(.55, .08, .92, .45, outline=c, width=w * 2)
        box(.68, .06, .8, .22, fill=BACKGROUND)
        line((.6, .4), (.15, .85), width=w * 3)
    elif kind == "globe":  # the language button
        oval(.1, .1, .9, .9, outline=c, width=w)
        oval(.32, .1, .68, .9, outline=c, width=max(1, w // 2))
        line((.1, .5), (.9, .5), width=max(1, w // 2))
        line((.18, .3), (.82, .3), width=max(1, w // 2))
        line((.18, .7), (.82, .7), width=max(1, w // 2))
    elif kind == "speaker":  # the say-it-again button
        draw.polygon([(x + s * .1, y + s * .38), (x + s * .28, y + s * .38), (x + s * .5, y + s * .18),
                      (x + s * .5, y + s * .82), (x + s * .28, y + s * .62), (x + s * .1, y + s * .62)],
                     fill=c)
        for r in (.18, .3):
            draw.arc((x + s * (.5 - r), y + s * (.5 - r * 1.4), x + s * (.5 + r * 1.6),
                      y + s * (.5 + r * 1.4)), -50, 50, fill=c, width=w)
    else:  # a product of a kind not drawn here: a pack
        pictogram(draw, "pack", x, y, size)


class GraphicScreen(PagedDisplay):
    """The screen on SPI (``device`` given: any luma device, such as luma's ``dummy``)."""

    def __init__(self, settings: DisplaySettings, device: Any = None) -> None:
        super().__init__()
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

    def layout(self, screen: Screen) -> list[Image.Image]:
        return render_pages(screen, self.device.width, self.device.height)

    def put(self, image: Image.Image) -> None:
        self.image = image
        try:
            self.device.display(self.image.convert(self.device.mode))
        except OSError as e:  # a loose cable must not stop a vend
            log.warning("the screen did not take the picture: %s", e)

    def close(self) -> None:
        try:
            self.device.cleanup()
        except (OSError, AttributeError):
            pass

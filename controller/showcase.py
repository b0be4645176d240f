"""``nspvend screens``: every screen a client can meet, as the configured display shows it,
so staff and translators can check them without the hardware.

Each screen is a line ``== NAME`` and then its lines exactly as the display shows them,
page by page (``-- page N`` before each page after the first); graphic screens are drawn as
PNG pictures, one a page, with ``--png DIR``.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from pathlib import Path

from controller import texts
from controller.config import Config, load_config
from controller.i18n import Language, languages
from hal.screens import Screen, hint_line, visible

GRAPHIC = {"st7789": (240, 240), "ili9341": (320, 240)}
CHARACTER = ("hd44780", "board")


def demo_config() -> Config:
    """The demo machine's config: what ``nspvend screens`` shows when there is no config."""
    path = importlib.resources.files("simulator").joinpath("demo.toml")
    with importlib.resources.as_file(path) as real:
        return load_config(real)


def every_screen(config: Config, t: Language) -> Iterator[tuple[str, Screen]]:
    """``(name, screen)`` for every screen a client can meet on ``config``'s machine."""
    product = config.products[0]
    name = product.name_in(t.code)
    say = config.say_again_button if config.speech.enabled else None
    yield "idle", texts.idle(False, config.hub_name, t, config.language_button, say)
    yield "idle_hub_open", texts.idle(True, config.hub_name, t, config.language_button, say)
    yield "vending", texts.vending(name, t, product.id)
    for i, message in enumerate(config.messages or [None]):
        yield (f"thank_you_{i + 1}" if config.messages else "thank_you",
               texts.thank_you(message and config.message_in(t.code, message), False,
                               config.hub_name, True, t))
    yield "thank_you_hub_open", texts.thank_you(None, True, config.hub_name, True, t)
    yield "thank_you_unsure", texts.thank_you(None, False, config.hub_name, False, t)
    alternative = config.alternative_in(t.code)
    yield "sorry", texts.sorry(name, alternative, t, product.id)
    yield "cannot_give", texts.sorry(name, alternative, t, product.id, empty=False)
    yield "cannot_dispense", texts.cannot_dispense(alternative, t)
    yield "out_of_service", texts.out_of_service(alternative, t)
    yield "service", texts.service(t)


def kind_of(config: Config, display: str | None) -> str:
    kind = display or config.display.kind
    if kind == "auto":
        return {"serial": "board", "gpio": "file"}.get(config.hal, "file")
    return kind


def show(config: Config, display: str | None, language: str | None,
         png: Path | None) -> list[str]:
    """The text ``nspvend screens`` prints (and the PNG files it writes to ``png``): each
    screen as ``== NAME`` and its first page, then ``-- page N`` and each further page."""
    from hal.hd44780 import render_pages as characters

    kind = kind_of(config, display)
    t = languages()[language or config.languages[0]]
    out = []
    for name, screen in every_screen(config, t):
        out.append(f"== {name}")
        if kind in CHARACTER:
            cols, rows = ((config.display.cols, config.display.rows) if kind == "hd44780"
                          else (20, 4))
            pages = characters(screen, cols, rows)
        elif kind in GRAPHIC:
            from hal.graphic import layout_pages

            width, height = _size(config, kind)
            pages = [[line for _, _, lines, _ in placed for line in lines]
                     for _, placed in layout_pages(screen, width, height)]
            if screen.hints:
                pages = [page + [_hints(screen)] for page in pages]
        else:
            pages = [screen.lines]
        for number, page in enumerate(pages, start=1):
            if number > 1:
                out.append(f"-- page {number}")
            out += [visible(line) for line in page]
        if png is not None and kind in GRAPHIC:
            from hal.graphic import render_pages

            png.mkdir(parents=True, exist_ok=True)
            for number, image in enumerate(render_pages(screen, *_size(config, kind)), start=1):
                path = png / f"{t.code}-{name}-{number}.png"
                image.save(path)
                out.append(f"   (page {number} drawn in {path})")
    return out


def _size(config: Config, kind: str) -> tuple[int, int]:
    return ((config.display.width, config.display.height) if config.display.kind == kind
            else GRAPHIC[kind])


def _hints(screen: Screen) -> str:
    return visible(hint_line(screen.hints))


def language_lines() -> list[str]:
    """``nspvend screens --languages``: one code a line, then its name and review state."""
    return [f"{code}  {lang.name}  {'reviewed' if lang.reviewed else 'not reviewed'} by a "
            f"native speaker{'' if lang.latin else '  (graphic screens only)'}"
            for code, lang in languages().items()]

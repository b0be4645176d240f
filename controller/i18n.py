"""The client's languages: message catalogs (gettext ``.po``, read with Babel) shipped in
``controller/locale/``, one a language, English the source.

Each catalog's header says whether a native speaker has reviewed it
(``X-Native-Speaker-Reviewed``); the config may enable an unreviewed one only with
``display.allow_unreviewed``. A text missing from a catalog falls back to English.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hal.screens import fold

LOCALE = Path(__file__).resolve().parent / "locale"
SOURCE = "en"
VOICES = {"en": "en-gb", "tr": "tr", "pl": "pl", "pt": "pt", "bn": "bn"}  # espeak-ng's names


@dataclass(frozen=True)
class Language:
    """One shipped language."""

    code: str
    name: str  # in itself: "Türkçe", "polski", "বাংলা"
    reviewed: bool
    latin: bool  # written in Latin script: a character LCD can show it (letters folded)
    texts: dict[str, str]

    def gettext(self, text: str) -> str:
        return self.texts.get(text) or text


@functools.cache
def codes() -> tuple[str, ...]:
    """The shipped languages' codes, English first (no catalog is read; the folder is looked
    at once: every screen's hints ask)."""
    stems = (path.stem for path in LOCALE.glob("*.po"))
    return tuple(sorted(stems, key=lambda c: (c != SOURCE, c)))


@functools.cache
def language(code: str) -> Language | None:
    """One shipped language, its catalog read (with Babel) the first time it is asked for;
    English is the source and needs none. None if nspvend has no such language."""
    if code == SOURCE:
        return Language(SOURCE, "English", True, True, {})
    path = LOCALE / f"{code}.po"
    if code not in codes():
        return None
    from babel import Locale
    from babel.messages.pofile import read_po

    with open(path, "rb") as f:
        catalog = read_po(f, locale=code)
    reviewed = _header(catalog, "X-Native-Speaker-Reviewed").lower().startswith("yes")
    texts = {m.id: m.string for m in catalog if m.id and m.string}
    sample = " ".join(texts.values())
    name = Locale.parse(code).get_display_name(code) or code
    return Language(code, name, reviewed, "?" not in fold(sample.replace("?", "")), texts)


def languages() -> dict[str, Language]:
    """Every shipped language, by code, English first (every catalog read: for listing
    them all; a machine reads only those its config names, :func:`language`)."""
    return {code: language(code) for code in codes()}


def _header(catalog: object, name: str) -> str:
    for key, value in getattr(catalog, "mime_headers", []):
        if key.lower() == name.lower():
            return value
    return ""


def translator(code: str) -> Callable[[str], str]:
    """The gettext of language ``code`` (English if there is no such catalog)."""
    return (language(code) or language(SOURCE)).gettext

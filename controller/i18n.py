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

from babel import Locale
from babel.messages.pofile import read_po

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
def languages() -> dict[str, Language]:
    """Every shipped language, by code, English first."""
    found: dict[str, Language] = {}
    for path in sorted(LOCALE.glob("*.po"), key=lambda p: (p.stem != SOURCE, p.stem)):
        with open(path, "rb") as f:
            catalog = read_po(f, locale=path.stem)
        reviewed = _header(catalog, "X-Native-Speaker-Reviewed").lower().startswith("yes")
        texts = {m.id: m.string for m in catalog if m.id and m.string}
        sample = " ".join(texts.values())
        name = Locale.parse(path.stem).get_display_name(path.stem) or path.stem
        found[path.stem] = Language(path.stem, name, reviewed or path.stem == SOURCE,
                                    "?" not in fold(sample.replace("?", "")), texts)
    return found


def _header(catalog: object, name: str) -> str:
    for key, value in getattr(catalog, "mime_headers", []):
        if key.lower() == name.lower():
            return value
    return ""


def translator(code: str) -> Callable[[str], str]:
    """The gettext of language ``code`` (English if there is no such catalog)."""
    language = languages().get(code) or languages()[SOURCE]
    return language.gettext

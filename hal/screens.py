"""What the client reads, as the HAL's displays take it: each screen as paragraphs in order
of importance, in a language, and how a display of a given size lays them out.

A :class:`Screen` is what the controller wants said; a display fits it to its own size
with :func:`fit`: words wrap, never split (a word longer than the line is the one thing
that is cut, and it is marked), and paragraphs that do not fit are left out from the
least important up, so nothing runs past the edge. Character displays also fold letters
their ROM lacks (:func:`fold`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

# screen names, as the machine and `nspvend screens` call them
SCREENS = ("idle", "idle_hub_open", "vending", "thank_you", "thank_you_unsure", "sorry",
           "cannot_dispense", "out_of_service", "service")


@dataclass(frozen=True)
class Screen:
    """One screen: its ``name``, its paragraphs (most important first), its ``language``
    and what a graphic display may draw beside the words (a product id or a symbol)."""

    name: str
    paragraphs: tuple[str, ...]
    language: str = "en"
    pictogram: str | None = None
    spoken: tuple[str, ...] = field(default=())  # what speech says; the paragraphs if empty

    @property
    def lines(self) -> list[str]:
        """The paragraphs as they are, for a display with room for any line."""
        return list(self.paragraphs)

    def to_speak(self) -> str:
        return " ".join(self.spoken or self.paragraphs)


def wrap(paragraph: str, width: int) -> list[str]:
    """``paragraph`` in lines of at most ``width``, broken between words; a word longer
    than a whole line is cut and ends in "-" (the one way a word is ever split)."""
    lines: list[str] = []
    current = ""
    for word in paragraph.split():
        while len(word) > width:
            if current:
                lines.append(current)
                current = ""
            lines.append(word[: width - 1] + "-")
            word = word[width - 1:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def fit(paragraphs: tuple[str, ...] | list[str], cols: int, rows: int) -> list[str]:
    """The lines a ``cols`` x ``rows`` display shows: paragraphs wrapped, in order, as many
    as fit whole; a paragraph that does not fit is left out (a later, shorter one may fit).
    The first, the most important, is shown even if only its first lines fit."""
    lines: list[str] = []
    for i, paragraph in enumerate(paragraphs):
        wrapped = wrap(paragraph, cols)
        if wrapped and len(lines) + len(wrapped) <= rows:
            lines += wrapped
        elif i == 0:
            lines += wrapped[:rows]
    return lines


# Letters an HD44780's standard ROM (A00) lacks, as the nearest it has.
FOLDS = {"ı": "i", "İ": "I", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D",
         "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "€": "EUR", "£": "GBP",
         "‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "...", "·": "."}


def fold(text: str) -> str:
    """``text`` in printable ASCII: accents dropped (ş -> s, ą -> a, ã -> a), the rest
    mapped by :data:`FOLDS`, anything else as "?"."""
    out = []
    for ch in text:
        if " " <= ch <= "~":
            out.append(ch)
            continue
        if ch in FOLDS:
            out.append(FOLDS[ch])
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch)
                       if not unicodedata.combining(c))
        out.append(base if base and all(" " <= c <= "~" for c in base) else "?")
    return "".join(out)


def latin(text: str) -> bool:
    """Whether ``text`` folds to readable ASCII (a character LCD can show it)."""
    return "?" not in fold(text).replace("?", "") and fold(text).count("?") == text.count("?")

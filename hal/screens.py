"""What the client reads, as the HAL's displays take it: each screen as paragraphs in order
of importance, in a language, and how a display of a given size lays them out.

A :class:`Screen` is what the controller wants said; a display lays it out for its own
size with :func:`pages`: words wrap, never split (a word longer than the line is the one
thing that is cut, and it is marked), and what does not fit on one page goes on the next,
the headline kept at the top, so nothing is ever left out and nothing runs past the edge.
Character displays also fold letters their ROM lacks (:func:`fold`).
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
    crossed: bool = False  # the pictogram crossed out: this screen gives nothing
    # ways out that need no reading: ("language", button) and ("speech", button), drawn as a
    # globe and a speaker with the button's number on every display
    hints: tuple[tuple[str, int], ...] = ()

    @property
    def lines(self) -> list[str]:
        """The paragraphs as they are, and the hints as symbols, for a display with room for
        any line (the simulator's, a kiosk's)."""
        return list(self.paragraphs) + ([visible(hint_line(self.hints))] if self.hints else [])

    def to_speak(self) -> str:
        return " ".join(self.spoken or self.paragraphs)


# the hints' marks in a line of text; each display draws them its own way
LANGUAGE_MARK, SPEECH_MARK = "\ue001", "\ue002"
MARKS = {"language": LANGUAGE_MARK, "speech": SPEECH_MARK}
SYMBOLS = {LANGUAGE_MARK: "\U0001F310", SPEECH_MARK: "\U0001F50A"}  # globe, speaker


def hint_line(hints: tuple[tuple[str, int], ...]) -> str:
    """The hints as one short line: a mark and the button's number each."""
    return "  ".join(MARKS[kind] + str(button) for kind, button in hints)


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


def pages(paragraphs: tuple[str, ...] | list[str], cols: int, rows: int) -> list[list[str]]:
    """The pages a ``cols`` x ``rows`` display turns through for these paragraphs: all of
    them, in order, nothing left out. What fits on one page is one page. Otherwise the
    headline (the first paragraph) stays at the top of every page, if it leaves room, and
    the rest follow, a paragraph whole on a page where it fits, else continued on the
    next. A headline taller than half the display is not repeated: it starts the first
    page(s) and the rest follows it."""
    wrapped = [wrap(p, cols) for p in paragraphs if p.strip()]
    if not wrapped:
        return [[]]
    if sum(len(w) for w in wrapped) <= rows:
        return [[line for w in wrapped for line in w]]
    head, rest = wrapped[0], wrapped[1:]
    # kept on every page when it takes at most half of it; a longer one is said once, so
    # the rest is not read a line a page
    keep = head if len(head) <= rows // 2 else []
    room = rows - len(keep)
    page: list[str] = []
    out = []
    if not keep:
        for i in range(0, len(head), rows):
            page = head[i:i + rows]
        out = [head[i:i + rows] for i in range(0, len(head) - len(page), rows)]
    for lines in rest:
        if len(page) + len(lines) <= room:
            page += lines
            continue
        if page:
            out.append(keep + page)
            page = []
        while len(lines) > room:
            out.append(keep + lines[:room])
            lines = lines[room:]
        page = list(lines)
    if page:
        out.append(keep + page)
    return out


class PagedDisplay:
    """A display that lays a screen out in pages and shows one at a time: a screen too long
    for it turns its pages (:meth:`turn_page`, every few seconds) rather than losing a word.
    A display says how it lays a screen out (:meth:`layout`) and puts one page up
    (:meth:`put`)."""

    def __init__(self) -> None:
        self.pages: list = [[]]
        self.index = 0

    def layout(self, screen: Screen) -> list:
        raise NotImplementedError

    def put(self, page: object) -> None:
        raise NotImplementedError

    def show(self, screen: Screen) -> int:
        """Show ``screen`` from its first page; returns how many pages it has here."""
        self.pages, self.index = self.layout(screen) or [[]], 0
        self.put(self.pages[0])
        return len(self.pages)

    def turn_page(self) -> None:
        """Show the next page (the first after the last); nothing if there is only one."""
        if len(self.pages) > 1:
            self.index = (self.index + 1) % len(self.pages)
            self.put(self.pages[self.index])


def visible(line: str) -> str:
    """A line as a terminal or a kiosk prints it: the hints' marks as the symbols they are."""
    for mark, symbol in SYMBOLS.items():
        line = line.replace(mark, symbol)
    return line


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

"""Letters a character LCD's ROM lacks, drawn for its eight custom characters (CGRAM).

An HD44780 with the common A00 ROM has ASCII, ä ñ ö ü and some symbols; the letters of
Turkish, Polish and Portuguese that it lacks (ı ş ğ ç İ Ü, ą ć ę ł ń ó ś ź ż, á à â ã é ê
í ó ô õ ú ...) are built here as 5x8 dot patterns from a base letter and its mark, and so
are the symbols of the hints (a globe for the language button, a speaker for the voice).
Each pattern is eight rows of five dots, top first, ``1`` lit.
"""

from __future__ import annotations

import unicodedata

from hal.screens import LANGUAGE_MARK, SPEECH_MARK

# What the A00 ROM shows itself, beyond printable ASCII (RPLCD's A00 codec maps these).
ROM = frozenset("äñöü°¥£¢")

# lower-case letters in rows 2..6 (five rows), as the ROM draws them; g and p go to row 7
_LOWER = {
    "a": ["01110", "00001", "01111", "10001", "01111"],
    "c": ["01110", "10000", "10000", "10001", "01110"],
    "e": ["01110", "10001", "11111", "10000", "01110"],
    "g": ["01111", "10001", "01111", "00001", "01110"],
    "i": ["01100", "00100", "00100", "00100", "01110"],  # dotless: the mark gives the dot
    "l": ["01100", "00100", "00100", "00100", "01110"],
    "n": ["10110", "11001", "10001", "10001", "10001"],
    "o": ["01110", "10001", "10001", "10001", "01110"],
    "s": ["01110", "10000", "01110", "00001", "11110"],
    "u": ["10001", "10001", "10001", "10011", "01101"],
    "z": ["11111", "00010", "00100", "01000", "11111"],
}
# capitals squeezed into rows 1..6 (six rows), leaving row 0 for the mark
_UPPER = {
    "A": ["01110", "10001", "10001", "11111", "10001", "10001"],
    "C": ["01110", "10001", "10000", "10000", "10001", "01110"],
    "E": ["11111", "10000", "11110", "10000", "10000", "11111"],
    "G": ["01110", "10000", "10111", "10001", "10001", "01111"],
    "I": ["01110", "00100", "00100", "00100", "00100", "01110"],
    "L": ["10000", "10000", "10000", "10000", "10000", "11111"],
    "N": ["10001", "11001", "10101", "10011", "10001", "10001"],
    "O": ["01110", "10001", "10001", "10001", "10001", "01110"],
    "S": ["01111", "10000", "01110", "00001", "00001", "11110"],
    "U": ["10001", "10001", "10001", "10001", "10001", "01110"],
    "Z": ["11111", "00001", "00010", "00100", "01000", "11111"],
}
# marks above a lower-case letter (rows 0 and 1) and above a capital (row 0)
_ABOVE = {
    "\u0301": (["00010", "00100"], "00010"),  # acute
    "\u0300": (["01000", "00100"], "01000"),  # grave
    "\u0302": (["00100", "01010"], "00100"),  # circumflex
    "\u0303": (["01101", "10110"], "01110"),  # tilde
    "\u0307": (["00000", "00100"], "00100"),  # dot above
    "\u0306": (["10001", "01110"], "01010"),  # breve
    "\u0308": (["00000", "01010"], "01010"),  # diaeresis
}
_BELOW = {"\u0327": "00100", "\u0328": "00011"}  # cedilla, ogonek (row 7)
_STROKED = {  # letters with a stroke through them
    "ł": ["01100", "00100", "00110", "01100", "00100", "00100", "01110", "00000"],
    "Ł": ["10000", "10000", "10100", "11000", "10000", "10000", "11111", "00000"],
    "ı": ["00000", "00000", "01100", "00100", "00100", "00100", "01110", "00000"],
    "İ": ["00100", "00000", "01110", "00100", "00100", "00100", "01110", "00000"],
}
SYMBOLS = {
    LANGUAGE_MARK: ["01110", "10101", "11111", "10101", "11111", "10101", "01110", "00000"],
    SPEECH_MARK: ["00010", "00110", "11110", "11110", "11110", "00110", "00010", "00000"],
}


def glyph(ch: str) -> list[int] | None:
    """The 5x8 pattern of ``ch`` (eight row values of 0..31), or None if it cannot be drawn
    here (then it is folded to the nearest letter the ROM has)."""
    rows = SYMBOLS.get(ch) or _STROKED.get(ch)
    if rows is None:
        base, *marks = unicodedata.normalize("NFD", ch)
        if len(marks) != 1:
            return None
        mark = marks[0]
        if base in _LOWER and base != "l":
            body = _LOWER[base]
            above = _ABOVE.get(mark, (["00000", "00000"], ""))[0]
            below = _BELOW.get(mark, "00000")
            if mark not in _ABOVE and mark not in _BELOW:
                return None
            if base == "g" and mark in _BELOW:
                return None  # g's tail has the bottom row
            rows = above + body + [below]
        elif base in _UPPER:
            if mark in _ABOVE:
                rows = [_ABOVE[mark][1]] + _UPPER[base] + ["00000"]
            elif mark in _BELOW:
                rows = ["00000"] + _UPPER[base][:5] + [_UPPER[base][5], _BELOW[mark]]
            else:
                return None
        else:
            return None
    return [int(row, 2) for row in rows]


def drawable(ch: str) -> bool:
    """Whether a character LCD shows ``ch``: from its ROM, or as a custom character."""
    return " " <= ch <= "~" or ch in ROM or glyph(ch) is not None

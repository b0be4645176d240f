"""An HD44780 character LCD behind a PCF8574 I2C backpack, as the bytes on the bus drive it.

The physical world of a character display, for tests: feed it every byte written to the
PCF8574 (bit 0 RS, bit 1 RW, bit 2 E, bit 3 backlight, bits 4-7 D4-D7) and read back the
characters it shows. It starts in 8-bit mode as the chip does at power-up, follows the
4-bit switch, latches on E's falling edge, and keeps DDRAM as the chip lays it out.
"""

from __future__ import annotations

ROW_OFFSETS = {16: (0x00, 0x40, 0x10, 0x50), 20: (0x00, 0x40, 0x14, 0x54)}


class HD44780:
    def __init__(self, cols: int = 20, rows: int = 4) -> None:
        self.cols, self.rows = cols, rows
        self.ddram = bytearray(b" " * 0x80)
        self.cgram = bytearray(64)
        self.address = 0
        self.to_cgram = False
        self.four_bit = False
        self.increment = True
        self.display_on = False
        self.backlight = False
        self._pending: int | None = None
        self._enable = False
        self.bytes_seen = 0

    def write(self, byte: int) -> None:
        """One byte written to the PCF8574."""
        self.bytes_seen += 1
        self.backlight = bool(byte & 0x08)
        enable = bool(byte & 0x04)
        if self._enable and not enable:
            self._latch(byte)
        self._enable = enable

    def _latch(self, byte: int) -> None:
        rs, nibble = byte & 0x01, byte & 0xF0
        if not self.four_bit:
            self._execute(rs, nibble)  # D0-D3 are not wired: they read 0
            return
        if self._pending is None:
            self._pending = nibble
            return
        value, self._pending = self._pending | (nibble >> 4), None
        self._execute(rs, value)

    def _execute(self, rs: int, value: int) -> None:
        if rs:
            if self.to_cgram:
                self.cgram[self.address % 64] = value
                self.address = (self.address + 1) % 64
            else:
                self.ddram[self.address] = value
                self.address = (self.address + (1 if self.increment else -1)) % 0x80
        elif value & 0x80:
            self.address, self.to_cgram = value & 0x7F, False
        elif value & 0x40:
            self.address, self.to_cgram = value & 0x3F, True
        elif value & 0x20:
            self.four_bit = not value & 0x10
            self._pending = None
        elif value & 0x08:
            self.display_on = bool(value & 0x04)
        elif value & 0x04:
            self.increment = bool(value & 0x02)
        elif value & 0x02:
            self.address, self.to_cgram = 0, False
        elif value == 0x01:
            self.ddram[:] = b" " * 0x80
            self.address, self.to_cgram = 0, False

    def text(self) -> list[str]:
        """The rows as the codes stand in DDRAM (latin-1, right-stripped)."""
        offsets = ROW_OFFSETS.get(self.cols, ROW_OFFSETS[20])
        return [self.ddram[offsets[r]:offsets[r] + self.cols].decode("latin-1").rstrip()
                for r in range(self.rows)]

    def shown(self) -> list[str]:
        """The rows as a person reads them: the A00 ROM's own letters (ä ñ ö ü) and each
        custom character as the letter or symbol its dots draw (hal.glyphs), "?" if none."""
        offsets = ROW_OFFSETS.get(self.cols, ROW_OFFSETS[20])
        drawn = _known_patterns()
        out = []
        for r in range(self.rows):
            row = []
            for code in self.ddram[offsets[r]:offsets[r] + self.cols]:
                if code < 8:
                    row.append(drawn.get(bytes(self.cgram[code * 8:code * 8 + 8]), "?"))
                else:
                    row.append(_ROM_LETTERS.get(code, chr(code)))
            out.append("".join(row).rstrip())
        return out


_ROM_LETTERS = {0xE1: "ä", 0xEE: "ñ", 0xEF: "ö", 0xF5: "ü", 0xDF: "°"}


def _known_patterns() -> dict[bytes, str]:
    from hal.glyphs import glyph
    from hal.screens import LANGUAGE_MARK, SPEECH_MARK

    known = {}
    for ch in [chr(c) for c in range(0xC0, 0x180)] + [LANGUAGE_MARK, SPEECH_MARK]:
        pattern = glyph(ch)
        if pattern is not None:
            known.setdefault(bytes(pattern), ch)
    return known

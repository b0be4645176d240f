"""The board's 20x4 HD44780 character LCD on an I2C PCF8574 backpack.

Plain MicroPython (and CPython): ``i2c`` is anything with ``writeto(address, bytes)`` —
``machine.I2C`` on the board, a recorder in tests. The host lays the screen out (fitted,
accents folded); this only puts the lines it is sent on the glass. The backpack's bits:
0 RS, 1 RW, 2 E, 3 backlight, 4-7 D4-D7; 4-bit mode.
"""

RS = 0x01
ROM = {"ä": 0xE1, "ñ": 0xEE, "ö": 0xEF, "ü": 0xF5, "°": 0xDF}  # the A00 ROM's, beyond ASCII
ENABLE = 0x04
BACKLIGHT = 0x08
ROW_OFFSETS = (0x00, 0x40, 0x14, 0x54)


class Lcd:
    def __init__(self, i2c, address=0x27, cols=20, rows=4, sleep_ms=None):
        self.i2c = i2c
        self.address = address
        self.cols = cols
        self.rows = rows
        self.sleep_ms = sleep_ms or (lambda ms: None)
        self.shown = None
        self._init()

    def _write(self, byte):
        self.i2c.writeto(self.address, bytes([byte | BACKLIGHT]))

    def _pulse(self, byte):
        self._write(byte | ENABLE)
        self._write(byte & ~ENABLE)

    def _nibble(self, value, rs):
        self._pulse((value & 0xF0) | rs)

    def _send(self, value, rs=0):
        self._nibble(value, rs)
        self._nibble(value << 4, rs)

    def _init(self):
        self.sleep_ms(50)
        for _ in range(3):  # whatever mode it was in: 8-bit, three times
            self._nibble(0x30, 0)
            self.sleep_ms(5)
        self._nibble(0x20, 0)  # now 4-bit
        self._send(0x28)  # 4-bit, two lines (rows 3 and 4 continue 1 and 2), 5x8 dots
        self._send(0x0C)  # display on, no cursor, no blink
        self._send(0x06)  # entry: left to right, no shift
        self._send(0x01)  # clear
        self.sleep_ms(2)

    def show(self, lines):
        """Put ``lines`` (at most ``rows`` of at most ``cols`` characters) on the display."""
        lines = [line[:self.cols] for line in lines[:self.rows]]
        if lines == self.shown:
            return
        self.shown = lines
        self._send(0x01)
        self.sleep_ms(2)
        for row, line in enumerate(lines):
            self._send(0x80 | ROW_OFFSETS[row])
            for ch in line:
                code = ord(ch)
                if code >= 127 or code < 8:
                    code = ROM.get(ch, code if code < 8 else ord("?"))
                self._send(code if code < 8 or 32 <= code < 256 else ord("?"), RS)

    def glyph(self, code, rows):
        """Load custom character ``code`` (0..7) with eight rows of five dots: the host sends
        the letters of a page the ROM lacks, and the hints' symbols, this way."""
        self._send(0x40 | (code << 3))
        for row in rows:
            self._send(row & 0x1F, RS)
        self._send(0x80)

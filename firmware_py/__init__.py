"""The dispenser board's MicroPython firmware; its protocol and logic also run under CPython."""

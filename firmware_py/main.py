"""The firmware's entry on a Raspberry Pi Pico: USB serial to the Pi, pins from ``pinmap``.

A hardware watchdog restarts the board if the loop ever stops; every motor is
switched off at power-up, on any error, and when the loop ends.
"""

import os
import sys

import machine

from firmware_py import pinmap
from firmware_py.board import Board
from firmware_py.loop import serve
from firmware_py.pins import HardwarePins


class _UsbLink:
    """The USB serial port as a binary file: stdin to read, stdout to write."""

    def __init__(self):
        self.rx = sys.stdin.buffer
        self.tx = sys.stdout.buffer

    def read(self, n):
        return self.rx.read(n)

    def write(self, data):
        self.tx.write(data)


def main():
    pins = HardwarePins(pinmap)
    pins.all_off()
    watchdog = machine.WDT(timeout=pinmap.WATCHDOG_MS)
    boot_id = "".join("%02x" % b for b in os.urandom(4))
    link = _UsbLink()
    board = Board(pins, link.write, boot_id)
    try:
        serve(board, link, watchdog=watchdog, pollable=sys.stdin)
    finally:
        pins.all_off()


main()

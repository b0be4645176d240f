"""The board's wiring, in one place: GPIO numbers of a Raspberry Pi Pico.

Change this file (only) when the board is wired differently.
"""

MOTORS = (2, 3, 4, 5, 6, 7, 8, 9)  # slot 1..8: MOSFET/relay gate, high = motor on
HOME_SWITCHES = (10, 11, 12, 13, 14, 15, 16, 17)  # slot 1..8: closed (low) at home
BUTTONS = (18, 19, 20, 21, 22, 26)  # product buttons 1..6: pressed = low
DROP_BEAM = 27  # IR beam under the slots: blocked = high
DOOR = 28  # door switch: open = high
SHARPS_BIN = 0  # bin-full switch: full = low
STATUS_LED = 25  # the Pico's own LED
WATCHDOG_MS = 2000
BAUD = 115200

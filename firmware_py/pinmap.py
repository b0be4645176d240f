"""The board's wiring, in one place: GPIO numbers of a Raspberry Pi Pico.

Change this file (only) when the board is wired differently. A Pico has 26 GPIOs to give:
this wiring uses 25 of them for six slots, eight buttons (six products, the language
button and the say-it-again button), the drop beam, door, sharps bin and the LCD's I2C.
"""

MOTORS = (2, 3, 4, 5, 6, 7)  # slot 1..6: MOSFET/relay gate, high = motor on
HOME_SWITCHES = (8, 9, 10, 11, 12, 13)  # slot 1..6: closed (low) at home
BUTTONS = (14, 15, 16, 17, 18, 19, 20, 21)  # buttons 1..8: pressed = low
DROP_BEAM = 22  # IR beam under the slots: blocked = high
DOOR = 26  # door switch: open = high
SHARPS_BIN = 27  # bin-full switch: full = low
LCD_I2C = 0  # the 20x4 LCD's PCF8574 backpack on I2C0 ...
LCD_SDA = 0  # ... SDA on GP0
LCD_SCL = 1  # ... SCL on GP1
LCD_ADDRESS = 0x27
STATUS_LED = 25  # the Pico's own LED
WATCHDOG_MS = 2000
BAUD = 115200

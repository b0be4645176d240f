"""Each backend's own settings: its table of the config, checked by controller/config.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SerialSettings:
    """``[serial]``: where the dispenser board is."""

    port: str = "/dev/ttyACM0"  # any path or URL pyserial opens, a pty included
    baud: int = 115200
    # a board too old for this software (board_outdated) updated by the daemon itself, in
    # one of ``update_hours`` (schedule.Window, local time): see nspvend board update
    auto_update: bool = False
    update_hours: tuple = ()


@dataclass(frozen=True)
class SimSettings:
    """``[sim]``: the simulated machine (``hal = "sim"``, or gpio on mock pins)."""

    slots: int  # as many as the config's [[slots]] reach
    control: str | None = None  # serve the simulator's control socket here
    motor_s: float = 0.0  # how long a spiral turn takes


@dataclass(frozen=True)
class GpioSettings:
    """``[gpio]``: the direct GPIO wiring: BCM pin numbers, active levels and timings."""

    pin_factory: str
    motors: dict[int, int]  # slot -> pin
    home_switches: dict[int, int]  # slot -> pin; empty: run each turn for turn_ms
    buttons: dict[int, int]  # button -> pin
    drop_sensor: int
    door: int | None = None
    sharps_bin: int | None = None
    led: int | None = None
    motor_active_high: bool = True
    led_active_high: bool = True
    buttons_pull: str = "up"
    switches_pull: str = "up"
    drop_sensor_pull: str = "up"
    door_open_when_active: bool = False
    sharps_bin_full_when_active: bool = True
    turn_ms: int = 1500
    motor_timeout_ms: int = 4000
    drop_wait_ms: int = 500
    bounce_ms: int = 20
    display_file: str | None = None


DISPLAY_KINDS = ("auto", "hd44780", "st7789", "ili9341", "file", "none")


@dataclass(frozen=True)
class DisplaySettings:
    """``[display]``'s hardware keys: which display shows the client's screens.

    ``auto`` is the wiring's own: the board's LCD on the serial wiring, ``gpio.display_file``
    (or nothing) on the gpio wiring, the simulator's screen on ``sim``."""

    kind: str = "auto"
    cols: int = 20  # a character LCD's size
    rows: int = 4
    i2c_port: int = 1  # the HD44780's PCF8574 backpack
    i2c_address: int = 0x27
    width: int = 240  # a graphic screen's size, in pixels
    height: int = 240
    spi_port: int = 0
    spi_device: int = 0
    gpio_dc: int = 24
    gpio_reset: int = 25
    rotate: int = 0  # quarter turns
    file: str | None = None  # kind "file": where a kiosk reads the lines

    @property
    def character(self) -> bool:
        """Whether this display shows characters from a ROM (Latin letters only)."""
        return self.kind == "hd44780"


@dataclass(frozen=True)
class SpeechSettings:
    """``[speech]``'s hardware keys: how the machine speaks (espeak-ng, the sound output)."""

    enabled: bool = False
    espeak: str = "espeak-ng"
    output: str = "sound"  # or a folder: each utterance written there as a WAV file (tests)

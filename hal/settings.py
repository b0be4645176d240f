"""Each backend's own settings: its table of the config, checked by controller/config.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SerialSettings:
    """``[serial]``: where the dispenser board is."""

    port: str = "/dev/ttyACM0"  # any path or URL pyserial opens, a pty included
    baud: int = 115200


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

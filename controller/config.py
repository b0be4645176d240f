"""The daemon's TOML configuration: read, check every key, and say plainly what is wrong.

A bad file raises :class:`ConfigError`, whose text is one line naming the file,
the key and the problem; the daemon prints it and exits 78 (EX_CONFIG).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.i18n import codes as shipped_codes
from controller.i18n import language as read_language
from controller.i18n import translator
from controller.messages import read_key
from controller.schedule import Window, parse_window
from hal import PIN_FACTORIES, WIRINGS
from hal.settings import (
    DISPLAY_KINDS,
    DisplaySettings,
    GpioSettings,
    SerialSettings,
    SimSettings,
    SpeechSettings,
)

log = logging.getLogger(__name__)

EX_CONFIG = 78
# where else to go when staff did not say (display.alternative), in the message catalogs
DEFAULT_ALTERNATIVE = "Please try the Hub or a pharmacy with the needle exchange sign."
DEFAULT_PATHS = ("./nspvend.toml", "/etc/nspvend/config.toml")
MACHINE_ID = re.compile(r"[a-z0-9-]{1,64}")
PRODUCT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_SLOTS = 64


class ConfigError(Exception):
    """A configuration problem, as one line: ``FILE: KEY: PROBLEM``."""

    def __init__(self, path: str | os.PathLike, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    button: int
    names: tuple[tuple[str, str], ...] = ()  # (language, name) where it differs from ``name``
    shelf_life_months: int | None = None  # a fresh pack's life: the hub suggests a use-by date

    def name_in(self, language: str) -> str:
        return dict(self.names).get(language, self.name)


@dataclass(frozen=True)
class StaffTexts:
    """Staff's own words in one language (``[display.translations.CODE]``): where else to go,
    and the signposting messages in the order of ``display.messages``."""

    alternative: str | None = None
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlotConfig:
    slot: int
    product: str
    capacity: int
    low_at: int


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int = 1883
    prefix: str = "nspvend"
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: str = "3.1.1"
    keepalive_s: int = 60
    stock_interval_s: int | None = None  # None: stock at every bucket close
    state_interval_s: int = 300
    homeassistant: bool = False
    command_key_file: str | None = None
    command_max_age_s: int = 86400

    def password(self) -> str | None:
        """The broker password (the first line of ``password_file``), if there is one."""
        if not self.password_file:
            return None
        with open(self.password_file) as f:
            return f.read().strip()


def log_in(client: Any, account: Any, password: str | None) -> None:
    """Give ``client`` (paho) the broker account and TLS files of ``account`` (an
    :class:`MqttConfig`, or anything with its ``username`` and ``*_file`` fields)."""
    if account.username:
        client.username_pw_set(account.username, password)
    if account.ca_file:
        client.tls_set(ca_certs=account.ca_file, certfile=account.cert_file,
                       keyfile=account.key_file, tls_version=_tls_client())


# Kept by older configs: what a vend causes was told after a random delay, then rounded.
RETIRED_PRIVACY_KEYS = ("event_delay_s", "event_round_s")
RESERVED_PINS = {0: "the HAT ID EEPROM's (ID_SD)", 1: "the HAT ID EEPROM's (ID_SC)"}
PULLS = ("up", "down", "none")


@dataclass(frozen=True)
class Config:
    """A validated configuration; every value has been checked."""

    path: str
    machine_id: str
    hal: str
    serial: SerialSettings
    sim: SimSettings
    database_path: str
    control_socket: str
    control_group: str
    mqtt: MqttConfig | None
    gpio: GpioSettings | None
    bucket_minutes: int
    vend_retries: int
    vend_min_interval_ms: int
    press_max_wait_s: float
    silence_hours: float
    hub_open: tuple[Window, ...]
    hub_name: str
    timezone: str
    messages: tuple[str, ...]
    alternative: str | None  # None: the catalogs' own words (DEFAULT_ALTERNATIVE)
    thank_you_s: float
    display: DisplaySettings
    languages: tuple[str, ...]
    language_button: int | None
    speech: SpeechSettings
    speak_every_screen: bool
    say_again_button: int | None
    volume: int
    quiet_volume: int
    quiet_hours: tuple[Window, ...]
    products: tuple[Product, ...]
    slots: tuple[SlotConfig, ...]
    translations: tuple[tuple[str, StaffTexts], ...] = ()

    def alternative_in(self, language: str) -> str:
        """Where else to go, in ``language`` where staff gave it, else as staff wrote it, else
        the machine's own words in ``language``."""
        return (dict(self.translations).get(language, StaffTexts()).alternative
                or self.alternative or translator(language)(DEFAULT_ALTERNATIVE))

    def message_in(self, language: str, message: str) -> str:
        """A signposting message in ``language``: its translation when it is one of the
        config's messages and staff translated them, else as written (a message set later by
        command is shown as staff wrote it)."""
        texts = dict(self.translations).get(language, StaffTexts())
        if texts.messages and message in self.messages:
            return texts.messages[self.messages.index(message)]
        return message

    @property
    def backend(self) -> str:
        """The HAL backend to open (``hal.open_hardware``): the wiring, or ``gpio-mock`` for
        the gpio wiring on gpiozero's mock pins, which the simulator drives."""
        if self.gpio is not None and self.gpio.pin_factory == "mock":
            return "gpio-mock"
        return self.hal

    @property
    def hardware_settings(self) -> Any:
        """What :attr:`backend` is opened with: its own table, never the whole config."""
        return {"serial": self.serial, "sim": self.sim, "gpio": self.gpio,
                "gpio-mock": (self.gpio, self.sim)}[self.backend]

    def product(self, product_id: str) -> Product | None:
        return next((p for p in self.products if p.id == product_id), None)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class _Table:
    """Reads one TOML table, checking types and ranges and refusing unknown keys."""

    def __init__(self, path: str, data: Any, prefix: str) -> None:
        self.path, self.prefix = path, prefix
        if not isinstance(data, dict):
            raise ConfigError(path, prefix, "must be a table")
        self.data = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), problem)

    # called with (key, default, what) for every key read: how docs/config.md is made from
    # the readers themselves (hub/configdoc.py)
    watch: Callable[[str, Any, str], None] | None = None

    def get(self, name: str, kind: type | tuple[type, ...], default: Any, what: str) -> Any:
        self.seen.add(name)
        if _Table.watch is not None:
            _Table.watch(self.key(name), default, what)
        if name not in self.data:
            if default is _REQUIRED:
                raise self.fail(name, f"is missing; it must be {what}")
            return default
        value = self.data[name]
        if isinstance(value, bool) and kind is not bool and bool not in _tuple(kind):
            raise self.fail(name, f"must be {what}, not {value!r}")
        if not isinstance(value, kind):
            raise self.fail(name, f"must be {what}, not {value!r}")
        return value

    def text(self, name: str, default: Any = None, pattern: re.Pattern | None = None,
             what: str = "a string") -> Any:
        value = self.get(name, str, default, what)
        if isinstance(value, str):
            if not value.strip():
                raise self.fail(name, f"must be {what}, not empty")
            if pattern and not pattern.fullmatch(value):
                raise self.fail(name, f"must be {what}, not {value!r}")
        return value

    def integer(self, name: str, default: Any, low: int, high: int) -> Any:
        value = self.get(name, int, default, f"a whole number from {low} to {high}")
        if isinstance(value, int) and not low <= value <= high:
            raise self.fail(name, f"must be a whole number from {low} to {high}, not {value}")
        return value

    def number(self, name: str, default: Any, low: float, high: float) -> Any:
        value = self.get(name, (int, float), default, f"a number from {low} to {high}")
        if value is not None and not low <= value <= high:
            raise self.fail(name, f"must be a number from {low} to {high}, not {value}")
        return float(value) if value is not None else None

    def flag(self, name: str, default: bool) -> bool:
        return self.get(name, bool, default, "true or false")

    def strings(self, name: str, default: Any) -> Any:
        value = self.get(name, list, default, "a list of strings")
        for i, item in enumerate(value or []):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(self.path, f"{self.key(name)}[{i}]", "must be a non-empty string")
        return value

    def table(self, name: str) -> _Table:
        self.seen.add(name)
        return _Table(self.path, self.data.get(name, {}), self.key(name))

    def finish(self) -> None:
        for name in self.data:
            if name not in self.seen:
                raise self.fail(name, "is not a setting nspvend knows (a typo?)")


_REQUIRED = object()


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def find_config(explicit: str | None) -> str:
    """The config file to use: ``explicit``, ``$NSPVEND_CONFIG``, or a default path."""
    return find_file(explicit, "NSPVEND_CONFIG", DEFAULT_PATHS)


def find_file(explicit: str | None, variable: str, defaults: tuple[str, ...]) -> str:
    """``explicit``, else the environment's ``variable``, else the first of ``defaults`` that
    exists (the last one if none does)."""
    if explicit:
        return explicit
    if os.environ.get(variable):
        return os.environ[variable]
    for candidate in defaults:
        if Path(candidate).exists():
            return candidate
    return defaults[-1]


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` on the first problem."""
    path = str(path)
    return parse_config(read_toml(path, "NSPVEND_CONFIG"), path)


def read_toml(path: str, variable: str) -> dict:
    """The TOML file at ``path``, or a :class:`ConfigError` saying in one line why not
    (``variable``: the environment variable that names another file)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", f"no such file; pass --config FILE or set {variable}") from None
    except PermissionError:
        raise ConfigError(path, "", "cannot be read (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a folder, not a config file") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except RecursionError:
        raise ConfigError(path, "", "nests tables or lists too deeply to be a config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"is not valid TOML: {e}") from None


def resolver(path: str) -> Callable[[str], str]:
    """Makes a path named in the config file at ``path`` absolute: relative to the file's
    folder (to the working folder for a config that is not a file)."""
    base = Path(path).resolve().parent if not path.startswith("<") else Path.cwd()

    def resolve(p: str) -> str:
        return str(p if os.path.isabs(p) else base / p)

    return resolve


def parse_config(data: dict, path: str = "<config>") -> Config:
    """Validate already-parsed TOML ``data`` read from ``path``."""
    resolve = resolver(path)
    top = _Table(path, data, "")
    machine_id = top.text("machine_id", _REQUIRED, MACHINE_ID,
                          "lower-case letters, digits and dashes, like \"hackney-01\"")
    hal = top.get("hal", str, "sim", '"gpio", "serial" or "sim"')
    if hal not in WIRINGS:
        raise top.fail("hal", f'must be "gpio", "serial" or "sim", not {hal!r}')

    sim_table = top.table("sim")
    sim_control = sim_table.text("control", None)
    sim_motor_s = sim_table.number("motor_s", 0.0, 0.0, 10.0)
    sim_table.finish()

    serial_table = top.table("serial")
    port = serial_table.text("port", "/dev/ttyACM0")
    if "://" not in port:  # a pyserial URL (loop://, socket://) is taken as it is
        port = resolve(port)
    baud = serial_table.integer("baud", 115200, 1200, 4_000_000)
    auto_update = serial_table.flag("auto_update", False)
    update_hours = []
    for i, line in enumerate(serial_table.strings("update_hours", ["Daily 10:00-11:00"])):
        try:
            update_hours.append(parse_window(line))
        except ValueError as e:
            raise ConfigError(path, f"serial.update_hours[{i}]", str(e)) from None
    serial = SerialSettings(port, baud, auto_update, tuple(update_hours))
    serial_table.finish()

    gpio = None
    if hal == "gpio":
        gpio = _parse_gpio(top, resolve)
    elif "gpio" in data:
        raise top.fail("gpio", f'is only read with hal = "gpio" (hal is "{hal}")')
    top.seen.add("gpio")
    if sim_control and not (hal == "sim" or (gpio and gpio.pin_factory == "mock")):
        raise sim_table.fail("control", 'is only for hal = "sim" or "gpio" with pin_factory = "mock"; '
                                  "the board simulator has its own")

    database = top.table("database")
    database_path = resolve(database.text("path", "/var/lib/nspvend/nspvend.db"))
    database.finish()

    control = top.table("control")
    control_socket = resolve(control.text("socket", "/run/nspvend/control.sock"))
    control_group = control.text("group", "nspvend-staff")
    control.finish()

    usage = top.table("usage")
    bucket_minutes = usage.integer("bucket_minutes", 60, 1, 1440)
    usage.finish()

    mqtt = _parse_mqtt(top, resolve, bucket_minutes) if "mqtt" in data else None
    top.seen.add("mqtt")

    privacy = top.table("privacy")
    retired = [name for name in RETIRED_PRIVACY_KEYS if name in privacy.data]
    privacy.seen.update(retired)
    if retired:
        log.warning("%s: %s: retired and ignored (what a vend causes is now told when its usage "
                    "bucket closes: usage.bucket_minutes); remove %s", path,
                    ", ".join(privacy.key(name) for name in retired),
                    "the line" if len(retired) == 1 else "the lines")
    privacy.finish()

    vend = top.table("vend")
    retries = vend.integer("retries", 1, 0, 5)
    min_interval_ms = vend.integer("min_interval_ms", 0, 0, 60_000)
    press_max_wait_s = vend.number("press_max_wait_s", 20, 1, 600)
    vend.finish()

    alerts = top.table("alerts")
    silence_hours = alerts.number("silence_hours", 12, 0.5, 24 * 14)
    alerts.finish()

    schedule = top.table("schedule")
    windows = []
    for i, line in enumerate(schedule.strings("hub_open", [])):
        try:
            windows.append(parse_window(line))
        except ValueError as e:
            raise ConfigError(path, f"schedule.hub_open[{i}]", str(e)) from None
    hub_name = schedule.text("hub_name", "the Hub")
    timezone = schedule.text("timezone", "Europe/London")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise schedule.fail("timezone", f"{timezone!r} is not a time zone such as Europe/London") from None
    schedule.finish()

    display = top.table("display")
    messages = display.strings("messages", [])
    alternative = display.text("alternative", None)
    thank_you_s = display.number("thank_you_s", 8, 1, 120)
    screen = _parse_display(display, resolve)
    allow_unreviewed = display.flag("allow_unreviewed", False)
    shown_languages = tuple(display.strings("languages", ["en"]))
    language_button = display.integer("language_button", None, 1, 64)
    translations = _translations(display.table("translations"), len(messages))
    display.finish()

    speech_table = top.table("speech")
    speech = SpeechSettings(
        enabled=speech_table.flag("enabled", False),
        espeak=speech_table.text("espeak", "espeak-ng"),
        output=speech_table.text("output", "sound"),
    )
    if speech.output != "sound":
        speech = SpeechSettings(speech.enabled, speech.espeak, resolve(speech.output))
    every_screen = speech_table.flag("every_screen", False)
    say_button = speech_table.integer("say_again_button", None, 1, 64)
    volume = speech_table.integer("volume", 100, 0, 200)
    quiet_volume = speech_table.integer("quiet_volume", 40, 0, 200)
    quiet_hours = []
    for i, line in enumerate(speech_table.strings("quiet_hours", [])):
        try:
            quiet_hours.append(parse_window(line))
        except ValueError as e:
            raise ConfigError(path, f"speech.quiet_hours[{i}]", str(e)) from None
    speech_table.finish()

    products = _parse_products(path, top.get("products", list, [], "a list of [[products]]"))
    top.seen.add("products")
    slots = _parse_slots(path, top.get("slots", list, [], "a list of [[slots]]"), products)
    top.seen.add("slots")
    top.finish()
    if gpio is not None:
        _check_gpio_wiring(path, gpio, products, slots)
    _check_languages(path, shown_languages, allow_unreviewed, screen, hal)
    used = {p.button: f"product {p.id}" for p in products}
    for key, button in (("display.language_button", language_button),
                        ("speech.say_again_button", say_button)):
        if button is None:
            continue
        if button in used:
            raise ConfigError(path, key, f"button {button} is already {used[button]}'s")
        used[button] = key
        if gpio is not None and button not in gpio.buttons:
            raise ConfigError(path, "gpio.buttons", f"has no pin for button {button} ({key}); "
                                                    f"list {button} pins or more")

    return Config(
        path=path, machine_id=machine_id, hal=hal, serial=serial,
        sim=SimSettings(max(s.slot for s in slots), resolve(sim_control) if sim_control else None,
                        sim_motor_s),
        database_path=database_path, control_socket=control_socket, control_group=control_group,
        mqtt=mqtt, gpio=gpio,
        bucket_minutes=bucket_minutes, vend_retries=retries,
        vend_min_interval_ms=min_interval_ms, press_max_wait_s=press_max_wait_s,
        silence_hours=silence_hours,
        hub_open=tuple(windows), hub_name=hub_name, timezone=timezone,
        messages=tuple(messages), alternative=alternative, thank_you_s=thank_you_s,
        display=screen, languages=shown_languages, language_button=language_button,
        speech=speech, speak_every_screen=every_screen, say_again_button=say_button,
        volume=volume, quiet_volume=quiet_volume, quiet_hours=tuple(quiet_hours),
        products=tuple(products), slots=tuple(slots), translations=translations,
    )


def readable_file(t: _Table, name: str, resolve: Any) -> str | None:
    """A file named by key ``name`` that will be read at start-up: it must be readable now,
    not at 3 a.m."""
    value = t.text(name, None)
    if not value:
        return None
    path = resolve(value)
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise t.fail(name, f"cannot read {path}: {e.strerror}") from None
    return path


def broker_settings(t: _Table, resolve: Any) -> dict[str, Any]:
    """The keys that say how to reach and log in to a broker (the machine's and the hub's
    ``[mqtt]``), checked, as keyword arguments of :class:`MqttConfig`."""
    settings = {
        "host": t.text("host", _REQUIRED),
        "port": t.integer("port", 1883, 1, 65535),
        "prefix": t.text("prefix", "nspvend", re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_/-]*"),
                         "a topic prefix without wildcards"),
        "username": t.text("username", None),
        "password_file": readable_file(t, "password_file", resolve),
        "ca_file": readable_file(t, "ca_file", resolve),
        "cert_file": readable_file(t, "cert_file", resolve),
        "key_file": readable_file(t, "key_file", resolve),
        "protocol": t.text("protocol", "3.1.1", re.compile(r"3\.1\.1|5"), '"3.1.1" or "5"'),
        "keepalive_s": t.integer("keepalive_s", 60, 5, 3600),
    }
    if settings["cert_file"] and not settings["ca_file"]:
        raise t.fail("cert_file", "a client certificate needs TLS: set ca_file too")
    if settings["key_file"] and not settings["cert_file"]:
        raise t.fail("key_file", "a key without cert_file")
    if settings["password_file"] and not settings["username"]:
        raise t.fail("password_file", "a password without username")
    if (settings["password_file"] and not settings["ca_file"]
            and settings["host"] not in LOOPBACK_HOSTS):
        raise t.fail("password_file", f"the password would cross the network to "
                                      f"{settings['host']} in clear text: set ca_file to turn "
                                      "TLS on")
    return settings


def command_key(t: _Table, name: str, resolve: Any) -> str | None:
    """A command key file: readable, and not empty."""
    path = readable_file(t, name, resolve)
    if path:
        try:
            read_key(path)
        except ValueError as e:
            raise t.fail(name, f"{path} {e}") from None
        except OSError as e:
            raise t.fail(name, f"cannot read {path}: {e.strerror or e}") from None
    return path


def _parse_mqtt(top: _Table, resolve: Any, bucket_minutes: int) -> MqttConfig:
    t = top.table("mqtt")
    cfg = MqttConfig(
        **broker_settings(t, resolve),
        stock_interval_s=t.integer("stock_interval_s", None, 60, 7 * 86400),
        state_interval_s=t.integer("state_interval_s", 300, 10, 86400),
        homeassistant=t.flag("homeassistant", False),
        command_key_file=command_key(t, "command_key_file", resolve),
        command_max_age_s=t.integer("command_max_age_s", 86400, 60, 30 * 86400),
    )
    if cfg.stock_interval_s is not None and cfg.stock_interval_s < bucket_minutes * 60:
        raise t.fail("stock_interval_s", f"{cfg.stock_interval_s} s is shorter than the usage "
                                         f"bucket ({bucket_minutes * 60} s): the hub could time "
                                         "single vends; leave it out or make it longer")
    t.finish()
    return cfg


def _parse_gpio(top: _Table, resolve: Any) -> GpioSettings:
    t = top.table("gpio")
    used: dict[int, str] = {}

    def pin(name: str, value: Any, key: str | None = None) -> int:
        key = key or name
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 27:
            raise ConfigError(t.path, t.key(key), f"must be a BCM GPIO number from 2 to 27, not {value!r}")
        if value in RESERVED_PINS:
            raise ConfigError(t.path, t.key(key), f"GPIO {value} is reserved: it is "
                                                  f"{RESERVED_PINS[value]} line")
        if value in used:
            raise ConfigError(t.path, t.key(key), f"GPIO {value} is already {used[value]}")
        used[value] = f"gpio.{key}"
        return value

    def pins(name: str, required: bool) -> dict[int, int]:
        values = t.get(name, list, _REQUIRED if required else [], "a list of BCM GPIO numbers")
        return {i + 1: pin(name, v, f"{name}[{i}]") for i, v in enumerate(values)}

    def single(name: str, required: bool = False) -> int | None:
        value = t.get(name, int, _REQUIRED if required else None, "a BCM GPIO number")
        return None if value is None else pin(name, value)

    def pull(name: str) -> str:
        value = t.text(name, "up")
        if value not in PULLS:
            raise t.fail(name, f'must be "up" (to ground), "down" (to 3.3 V) or "none", not {value!r}')
        return value

    factory = t.text("pin_factory", "lgpio")
    if factory not in PIN_FACTORIES:
        raise t.fail("pin_factory", f"must be one of {', '.join(PIN_FACTORIES)}, not {factory!r}")
    motors = pins("motors", True)
    homes = pins("home_switches", False)
    if homes and len(homes) != len(motors):
        raise t.fail("home_switches", f"has {len(homes)} pins for {len(motors)} motors; "
                                      "give one per motor, or none")
    buttons = pins("buttons", True)
    display_file = t.text("display_file", None)
    cfg = GpioSettings(
        pin_factory=factory, motors=motors, home_switches=homes, buttons=buttons,
        drop_sensor=single("drop_sensor", required=True), door=single("door"),
        sharps_bin=single("sharps_bin"), led=single("led"),
        motor_active_high=t.flag("motor_active_high", True),
        led_active_high=t.flag("led_active_high", True),
        buttons_pull=pull("buttons_pull"), switches_pull=pull("switches_pull"),
        drop_sensor_pull=pull("drop_sensor_pull"),
        door_open_when_active=t.flag("door_open_when_active", False),
        sharps_bin_full_when_active=t.flag("sharps_bin_full_when_active", True),
        turn_ms=t.integer("turn_ms", 1500, 50, 20_000),
        motor_timeout_ms=t.integer("motor_timeout_ms", 4000, 50, 30_000),
        drop_wait_ms=t.integer("drop_wait_ms", 500, 0, 5000),
        bounce_ms=t.integer("bounce_ms", 20, 0, 500),
        display_file=resolve(display_file) if display_file else None,
    )
    if not cfg.home_switches and cfg.turn_ms >= cfg.motor_timeout_ms:
        raise t.fail("turn_ms", f"must be shorter than motor_timeout_ms ({cfg.motor_timeout_ms})")
    t.finish()
    return cfg


def _check_gpio_wiring(path: str, gpio: GpioSettings, products: list[Product],
                       slots: list[SlotConfig]) -> None:
    for product in products:
        if product.button not in gpio.buttons:
            raise ConfigError(path, "gpio.buttons", f"has no pin for button {product.button} "
                                                    f"({product.id}); list {product.button} pins or more")
    for slot in slots:
        if slot.slot not in gpio.motors:
            raise ConfigError(path, "gpio.motors", f"has no pin for slot {slot.slot}; list "
                                                   f"{slot.slot} pins or more")


def _parse_display(t: _Table, resolve: Any) -> DisplaySettings:
    kind = t.text("kind", "auto")
    if kind not in DISPLAY_KINDS:
        raise t.fail("kind", f"must be one of {', '.join(DISPLAY_KINDS)}, not {kind!r}")
    path = t.text("file", None)
    if kind == "file" and not path:
        raise t.fail("file", 'is missing: kind = "file" needs the path a kiosk reads')
    return DisplaySettings(
        kind=kind, cols=t.integer("cols", 20, 8, 40), rows=t.integer("rows", 4, 1, 4),
        i2c_port=t.integer("i2c_port", 1, 0, 20), i2c_address=t.integer("i2c_address", 0x27, 3, 0x77),
        width=t.integer("width", 240, 64, 1920), height=t.integer("height", 240, 64, 1080),
        spi_port=t.integer("spi_port", 0, 0, 5), spi_device=t.integer("spi_device", 0, 0, 5),
        gpio_dc=t.integer("gpio_dc", 24, 2, 27), gpio_reset=t.integer("gpio_reset", 25, 2, 27),
        rotate=t.integer("rotate", 0, 0, 3), file=resolve(path) if path else None)


def _tls_client() -> int:
    import ssl  # only where the broker is spoken to over TLS: 5 MB a machine may not need

    return ssl.PROTOCOL_TLS_CLIENT


def _check_languages(path: str, codes: tuple[str, ...], allow_unreviewed: bool,
                     display: DisplaySettings, hal: str) -> None:
    shipped = shipped_codes()
    if not codes:
        raise ConfigError(path, "display.languages", "must name at least one language")
    for i, code in enumerate(codes):
        key = f"display.languages[{i}]"
        language = read_language(code)  # only the languages named are read
        if language is None:
            raise ConfigError(path, key, f"{code!r} is not a language nspvend has; it has "
                                         f"{', '.join(shipped)} (nspvend screens --languages)")
        if not language.reviewed and not allow_unreviewed:
            raise ConfigError(path, key, f"the {language.name} texts have not been reviewed by a "
                                         "native speaker; have them reviewed, or set "
                                         "display.allow_unreviewed = true")
        character = display.character or (display.kind == "auto" and hal == "serial")
        if character and not language.latin:
            raise ConfigError(path, key, f"{language.name} is not written in Latin letters: a "
                                         "character LCD cannot show it; use a graphic screen")
    if len(set(codes)) != len(codes):
        raise ConfigError(path, "display.languages", "names a language twice")


def _translations(t: _Table, count: int) -> tuple[tuple[str, StaffTexts], ...]:
    shipped = shipped_codes()
    out = []
    for code in t.data:
        if code not in shipped:
            raise t.fail(code, f"{code!r} is not a language nspvend has; it has {', '.join(shipped)}")
        table = t.table(code)
        messages = tuple(table.strings("messages", []))
        if messages and len(messages) != count:
            raise table.fail("messages", f"has {len(messages)} messages; it needs {count}, one for "
                                         "each of display.messages, in the same order")
        out.append((code, StaffTexts(table.text("alternative", None), messages)))
        table.finish()
    return tuple(sorted(out))


def _names(t: _Table) -> tuple[tuple[str, str], ...]:
    names = t.get("names", dict, {}, 'a table of names by language, like { tr = "..." }')
    for code, name in names.items():
        if code not in shipped_codes():
            raise ConfigError(t.path, f"{t.key('names')}.{code}",
                              f"is not a language nspvend has ({', '.join(shipped_codes())})")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(t.path, f"{t.key('names')}.{code}", "must be a non-empty string")
    return tuple(sorted(names.items()))


def _parse_products(path: str, items: list) -> list[Product]:
    products: list[Product] = []
    for i, item in enumerate(items):
        t = _Table(path, item, f"products[{i}]")
        product = Product(
            id=t.text("id", _REQUIRED, PRODUCT_ID, 'a short id like "syringe-1ml"'),
            name=t.text("name", _REQUIRED),
            button=t.integer("button", _REQUIRED, 1, 64),
            names=_names(t),
            shelf_life_months=t.integer("shelf_life_months", None, 1, 120),
        )
        t.finish()
        if any(p.id == product.id for p in products):
            raise t.fail("id", f"{product.id!r} is listed twice")
        if any(p.button == product.button for p in products):
            raise t.fail("button", f"button {product.button} is already used by another product")
        products.append(product)
    if not products:
        raise ConfigError(path, "products", "is missing; add at least one [[products]] table")
    return products


def _parse_slots(path: str, items: list, products: list[Product]) -> list[SlotConfig]:
    known = {p.id for p in products}
    slots: list[SlotConfig] = []
    for i, item in enumerate(items):
        t = _Table(path, item, f"slots[{i}]")
        slot = SlotConfig(
            slot=t.integer("slot", _REQUIRED, 1, MAX_SLOTS),
            product=t.text("product", _REQUIRED),
            capacity=t.integer("capacity", _REQUIRED, 1, 1000),
            low_at=t.integer("low_at", 0, 0, 1000),
        )
        t.finish()
        if slot.product not in known:
            raise t.fail("product", f"{slot.product!r} is not one of the [[products]] ids")
        if slot.low_at > slot.capacity:
            raise t.fail("low_at", f"{slot.low_at} is more than the capacity {slot.capacity}")
        if any(s.slot == slot.slot for s in slots):
            raise t.fail("slot", f"slot {slot.slot} is listed twice")
        slots.append(slot)
    if not slots:
        raise ConfigError(path, "slots", "is missing; add at least one [[slots]] table")
    return slots

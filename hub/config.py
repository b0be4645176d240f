"""The hub's TOML configuration (docs/config.md, "The hub's config"), checked as the machine's is:
a bad file is one line naming the file, the key and the problem, and exit 78."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.config import (
    _REQUIRED,
    MACHINE_ID,
    PRODUCT_ID,
    ConfigError,
    MqttConfig,
    _Table,
    broker_settings,
    command_key,
    find_file,
    read_toml,
    readable_file,
    resolver,
)
from controller.schedule import Window, parse_window

DEFAULT_PATHS = ("./hub.toml", "/etc/nspvend/hub.toml")
ALERT_TYPES = ("offline", "jam", "empty", "low_stock", "sharps_bin_full", "door_open", "silence",
               "storage_fault", "board_fault", "board_outdated", "expiring", "expired")
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHANNEL = re.compile(r"[a-z][a-z0-9-]{0,31}")  # a tally channel: counter, van, outreach-north
LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class AlertRoute:
    """Who hears which alerts, when: by email, by webhook (an HTTP POST of JSON), or both."""

    types: tuple[str, ...]
    email: tuple[str, ...] = ()
    webhook: str | None = None
    hours: tuple[Window, ...] = ()  # empty: always

    def wants(self, alert_type: str) -> bool:
        return alert_type in self.types


@dataclass(frozen=True)
class MachineInfo:
    """What the hub's staff call a machine, and the key its commands are signed with."""

    id: str
    name: str
    place: str | None = None
    command_key_file: str | None = None
    area: str | None = None  # for staff to see one area's machines (the fleet board's filter)


@dataclass(frozen=True)
class HubConfig:
    path: str
    mqtt: MqttConfig
    database_path: str
    listen_host: str
    listen_port: int
    base_url: str
    command_expires_s: int
    offline_after_s: int
    smtp_host: str | None
    smtp_port: int
    email_from: str
    routes: tuple[AlertRoute, ...]
    timezone: str
    financial_year_start: tuple[int, int]  # month, day
    machines: dict[str, MachineInfo]
    database_url: str | None = None  # PostgreSQL, instead of the SQLite file at database_path
    database_password_file: str | None = None
    keep_events_days: int = 400
    client_id: str = "nspvend-hub"  # its MQTT session; each hub process needs its own
    share_group: str | None = None  # several hub processes share the machines' messages
    catch_up_s: int = 86400  # how often each machine is asked for its recent buckets (0: never)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    metrics_token_file: str | None = None
    # the coverage figure: needle-syringes in a pack of each product, the estimated people
    # who inject drugs in the area (with the estimate's source and year), injections a day
    units: dict[str, int] = dataclasses.field(default_factory=dict)
    people_who_inject: int | None = None
    estimate_source: str | None = None
    estimate_year: int | None = None
    injections_per_day: float | None = None
    # counts from people (the tally page): the channels besides the machines, and the
    # products it offers (id -> name; empty: those the machines stock and [reports] units)
    expiring_days: int = 30  # an "expiring" alert this many days before a slot's packs expire
    tally_channels: tuple[str, ...] = ("counter", "van")
    tally_products: dict[str, str] = dataclasses.field(default_factory=dict)

    def metrics_token(self) -> str | None:
        """The bearer token /metrics takes without a login (the file's first line)."""
        if not self.metrics_token_file:
            return None
        try:
            with open(self.metrics_token_file, encoding="utf-8") as f:
                return f.readline().strip() or None
        except OSError:
            return None

    def trusted(self, address: str) -> bool:
        """Whether ``address`` is a reverse proxy whose X-Forwarded-For is believed."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def name_of(self, machine_id: str) -> str:
        info = self.machines.get(machine_id)
        return info.name if info else machine_id


def _zone(table: Any, key: str, name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise table.fail(key, f"{name!r} is not a time zone such as Europe/London") from None


def find_hub_config(explicit: str | None) -> str:
    """``explicit``, ``$NSPVEND_HUB_CONFIG``, ``./hub.toml`` or ``/etc/nspvend/hub.toml``."""
    return find_file(explicit, "NSPVEND_HUB_CONFIG", DEFAULT_PATHS)


def load_hub_config(path: str | os.PathLike) -> HubConfig:
    """Read and check ``path``; raise :class:`ConfigError` on the first problem."""
    path = str(path)
    return parse_hub_config(read_toml(path, "NSPVEND_HUB_CONFIG"), path)


def parse_hub_config(data: dict, path: str = "<hub config>") -> HubConfig:
    resolve = resolver(path)
    top = _Table(path, data, "")
    mqtt_table = top.table("mqtt")
    mqtt = MqttConfig(**broker_settings(mqtt_table, resolve))

    client_id = mqtt_table.text("client_id", "nspvend-hub", CLIENT_ID,
                                "letters, digits, '-' and '_' (at most 64)")
    share_group = mqtt_table.text("share_group", None, CLIENT_ID,
                                  "letters, digits, '-' and '_' (at most 64)")
    if share_group and mqtt.protocol != "5":
        raise mqtt_table.fail("share_group", 'shared subscriptions are MQTT 5\'s: set '
                                             'mqtt.protocol = "5"')
    catch_up_s = mqtt_table.integer("catch_up_s", 86400, 0, 7 * 86400)
    mqtt_table.finish()

    database = top.table("database")
    url = database.text("url", None)
    if url is not None:
        if "path" in database.data:
            raise database.fail("url", "give url (PostgreSQL) or path (SQLite), not both")
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            raise database.fail("url", "must be a PostgreSQL address such as "
                                       "postgresql:///nspvend") from None
        # a password holding "/" ends the host part early: the rest still has an "@"
        if ("@" in parts.path or parts.password is not None
                or "password" in urllib.parse.parse_qs(parts.query.lower())):
            raise database.fail("url", "has a password in it: put the password in a file and "
                                       "name it in database.password_file")
        try:
            parts.port  # noqa: B018 -- raises for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("postgres", "postgresql") or re.search(r"\s", url):
            raise database.fail("url", "must be a PostgreSQL address such as "
                                       "postgresql:///nspvend")  # not echoed: it may hold a secret
    database_path = resolve(database.text("path", "/var/lib/nspvend-hub/hub.db"))
    password_file = readable_file(database, "password_file", resolve)
    if password_file and url is None:
        raise database.fail("password_file", "is for PostgreSQL: set database.url too")
    keep_events_days = database.integer("keep_events_days", 400, 7, 36500)
    database.finish()

    web = top.table("web")
    listen = web.text("listen", "127.0.0.1:8080")
    match = LISTEN.fullmatch(listen)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise web.fail("listen", f"must be host:port such as 127.0.0.1:8080, not {listen!r}")
    base_url = web.text("base_url", f"http://{listen}/")
    if not re.fullmatch(r"https?://\S+", base_url):
        raise web.fail("base_url", f"must start with http:// or https://, not {base_url!r}")
    command_expires_s = web.integer("command_expires_s", 3600, 60, 86400)
    proxies = []
    for i, item in enumerate(web.get("trusted_proxies", list, [], 'a list of addresses or '
                                     'networks such as ["127.0.0.1", "10.0.0.0/8"]')):
        try:
            proxies.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise web.fail("trusted_proxies", f"item {i + 1}, {str(item)[:60]!r}, is not an "
                                              "address or network such as 10.0.0.0/8") from None
    metrics_token_file = readable_file(web, "metrics_token_file", resolve)
    timezone = web.text("timezone", None)
    if timezone is not None:
        _zone(web, "timezone", timezone)

    alerts = top.table("alerts")
    offline_after_s = alerts.integer("offline_after_s", 600, 5, 7 * 86400)
    expiring_days = alerts.integer("expiring_days", 30, 1, 365)
    smtp_host = alerts.text("smtp_host", None)
    smtp_port = alerts.integer("smtp_port", 25, 1, 65535)
    email_from = alerts.text("email_from", "nspvend@localhost")
    routes = []
    for i, item in enumerate(alerts.get("routes", list, [], "a list of [[alerts.routes]]")):
        routes.append(_route(path, item, i, smtp_host))
    alerts.finish()

    reports = top.table("reports")
    start = reports.text("financial_year_start", "04-01", re.compile(r"\d\d-\d\d"), '"MM-DD"')
    month, day = int(start[:2]), int(start[3:])
    if not (1 <= month <= 12 and 1 <= day <= 28):
        raise reports.fail("financial_year_start", f"must be a month and day (day 1 to 28) such "
                                                   f"as \"04-01\", not {start!r}")
    older = reports.text("timezone", None)  # where 0.2 read it: still read
    if older is not None:
        _zone(reports, "timezone", older)
        if timezone is not None and timezone != older:
            raise web.fail("timezone", f"{timezone!r} differs from reports.timezone {older!r}: "
                                       "keep web.timezone only")
    timezone = timezone or older or "Europe/London"
    units = reports.get("units", dict, {}, "a table of product ids and the needle-syringes "
                                           "in one pack, such as { syringe-1ml = 10 }")
    for product, n in units.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
            raise reports.fail(f"units.{product}", f"must be a whole number from 1 to 1000, "
                                                   f"not {n!r}")
    people = reports.integer("people_who_inject", None, 1, 10_000_000)
    source = reports.text("estimate_source", None)
    year = reports.integer("estimate_year", None, 1990, 2100)
    injections = reports.number("injections_per_day", None, 0.1, 50)
    if people is not None and (source is None or year is None):
        raise reports.fail("estimate_source" if source is None else "estimate_year",
                           "must be given with people_who_inject: the figure is printed with "
                           "its source and year")
    web.finish()
    reports.finish()

    tally = top.table("tally")
    channels = tally.strings("channels", ["counter", "van"])
    for i, channel in enumerate(channels):
        if not CHANNEL.fullmatch(channel) or channel.startswith("machine"):
            raise tally.fail(f"channels[{i}]", f"{channel[:40]!r} must be a short name in lower "
                                               "case letters, digits and '-' (not machine...), "
                                               'such as "van"')
    if len(set(channels)) != len(channels) or not 1 <= len(channels) <= 20:
        raise tally.fail("channels", "must name 1 to 20 channels, each once")
    tally_products = tally.get("products", dict, {}, 'a table of product ids and names, such '
                               'as { "syringe-1ml" = "1ml syringes x10" }')
    for product, name in tally_products.items():
        if not PRODUCT_ID.fullmatch(product) or not isinstance(name, str) or not name.strip():
            raise tally.fail(f"products.{product[:40]}", 'must be a product id like "syringe-1ml" '
                                                         "with its name as text")
    tally.finish()

    machines = {}
    for i, item in enumerate(top.get("machines", list, [], "a list of [[machines]]")):
        t = _Table(path, item, f"machines[{i}]")
        info = MachineInfo(
            id=t.text("id", _REQUIRED, MACHINE_ID, 'a machine_id like "hackney-01"'),
            name=t.text("name", _REQUIRED),
            place=t.text("place", None),
            command_key_file=command_key(t, "command_key_file", resolve),
            area=t.text("area", None),
        )
        t.finish()
        if info.id in machines:
            raise t.fail("id", f"{info.id!r} is listed twice")
        machines[info.id] = info
    top.seen.add("machines")
    top.finish()
    return HubConfig(
        path=path, mqtt=mqtt, database_path=database_path,
        listen_host=match["host"].strip("[]"), listen_port=int(match["port"]),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        command_expires_s=command_expires_s, offline_after_s=offline_after_s,
        smtp_host=smtp_host, smtp_port=smtp_port, email_from=email_from, routes=tuple(routes),
        timezone=timezone, financial_year_start=(month, day), machines=machines,
        units=dict(units), people_who_inject=people, estimate_source=source,
        estimate_year=year, injections_per_day=injections,
        database_url=url, database_password_file=password_file,
        keep_events_days=keep_events_days, client_id=client_id, share_group=share_group,
        catch_up_s=catch_up_s, trusted_proxies=tuple(proxies),
        metrics_token_file=metrics_token_file, tally_channels=tuple(channels),
        expiring_days=expiring_days,
        tally_products={k: v.strip() for k, v in tally_products.items()},
    )


def _route(path: str, item: Any, i: int, smtp_host: str | None) -> AlertRoute:
    t = _Table(path, item, f"alerts.routes[{i}]")
    types = t.strings("types", _REQUIRED)
    for j, kind in enumerate(types):
        if kind not in ALERT_TYPES:
            raise ConfigError(path, f"{t.key('types')}[{j}]",
                              f"{kind!r} is not an alert; alerts are {', '.join(ALERT_TYPES)}")
    email = t.strings("email", [])
    for j, address in enumerate(email):
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
            raise ConfigError(path, f"{t.key('email')}[{j}]", f"{address!r} is not an address")
    webhook = t.text("webhook", None)
    if webhook and not re.fullmatch(r"https?://\S+", webhook):
        raise t.fail("webhook", f"must be an http:// or https:// address, not {webhook!r}")
    if not email and not webhook:
        raise t.fail("email", "a route needs email addresses, a webhook, or both")
    if email and not smtp_host:
        raise t.fail("email", "email needs alerts.smtp_host")
    hours_value = t.get("hours", (str, list), "always", '"always", or hours like '
                                                        '"Mon-Fri 09:00-17:00" (or a list)')
    windows = []
    if hours_value != "always":
        for j, line in enumerate([hours_value] if isinstance(hours_value, str) else hours_value):
            try:
                windows.append(parse_window(line))
            except (ValueError, TypeError) as e:
                raise ConfigError(path, f"{t.key('hours')}[{j}]", str(e)) from None
    t.finish()
    return AlertRoute(tuple(types), tuple(email), webhook, tuple(windows))


def safe_url(url: str | None) -> str:
    """``url`` as it may be shown: no user, password or parameters."""
    try:
        parts = urllib.parse.urlsplit(url or "")
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(the database.url)"
    return f"{parts.scheme}://{host}{port}{parts.path}"

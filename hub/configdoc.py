"""docs/config.md made from the config readers themselves.

Every key the machine's reader (:func:`controller.config.parse_config`) and the hub's
(:func:`hub.config.parse_hub_config`) look at, with the default and the range they apply,
comes from reading a set of configs that between them take every branch; what each key is
for is written by people in docs/config.md and read back from it. ``tests/test_docs.py``
fails when the file is not what this makes (a key added, a default changed, a key left
undescribed)::

    python -m hub.configdoc --write     # rewrite docs/config.md after such a change
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller import config

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"  # in a checkout
UNDESCRIBED = "(not yet described)"

_MINIMAL = {
    "machine_id": "hackney-01",
    "products": [{"id": "syringe-1ml", "name": "1ml syringes", "button": 1,
                  "names": {"tr": "1ml şırınga"}}],
    "slots": [{"slot": 1, "product": "syringe-1ml", "capacity": 20, "low_at": 5}],
}


def _machine_variants() -> list[dict]:
    """Configs that between them reach every key the machine's reader knows."""
    gpio = {"pin_factory": "mock", "motors": [5], "buttons": [4, 17, 27], "drop_sensor": 22}
    tables: list[dict] = [
        {"hal": "sim", "sim": {}, "database": {}, "control": {}, "usage": {}, "vend": {},
         "alerts": {}, "schedule": {}, "privacy": {}, "speech": {"enabled": True}},
        {"hal": "serial", "serial": {},
         "mqtt": {"host": "hub.example.org"},
         "display": {"kind": "hd44780", "messages": ["Naloxone saves lives"],
                     "translations": {"tr": {"alternative": "Hub", "messages": ["Nalokson"]}}}},
        {"hal": "gpio", "gpio": gpio, "display": {"kind": "st7789"}},
        {"hal": "gpio", "gpio": gpio, "display": {"kind": "file", "file": "/run/screen.txt"}},
    ]
    return [{**copy.deepcopy(_MINIMAL), **t} for t in tables]


def _hub_variants() -> list[dict]:
    base = {"mqtt": {"host": "127.0.0.1"}, "web": {}, "reports": {},
            "alerts": {"smtp_host": "localhost", "routes": [
                {"types": ["jam"], "webhook": "https://ntfy.example.org/x", "email": ["a@b.c"]}]},
            "machines": [{"id": "hackney-01", "name": "Mare Street"}]}
    return [{**base, "database": {}}, {**base, "database": {"url": "postgresql://h@db/hub"}}]


def keys(parse: Callable[[dict, str], Any], variants: list[dict]) -> dict[str, tuple[Any, str]]:
    """Every key ``parse`` reads from ``variants``: its default and what it takes, by key
    (``products[].id`` for the keys of each ``[[products]]``; ``<code>`` for a language)."""
    found: dict[str, tuple[Any, str]] = {}

    def watch(key: str, default: Any, what: str) -> None:
        key = re.sub(r"\[\d+\]", "[]", key)
        key = re.sub(r"^display\.translations\.[a-z]+", "display.translations.<code>", key)
        found.setdefault(key, (default, what))

    config._Table.watch = watch
    try:
        for data in variants:
            parse(data, "config.toml")
    finally:
        config._Table.watch = None
    return found


def machine_keys() -> dict[str, tuple[Any, str]]:
    return keys(config.parse_config, _machine_variants())


def hub_keys() -> dict[str, tuple[Any, str]]:
    from hub.config import parse_hub_config

    return keys(parse_hub_config, _hub_variants())


def _default(value: Any) -> str:
    if value is config._REQUIRED:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict) and not value:
        return "none"
    if isinstance(value, list) and not value:
        return "`[]`"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _what(what: str) -> str:
    return what.replace("|", "\\|")


def descriptions(text: str) -> dict[tuple[str, str], str]:
    """What each key does, by (``machine`` or ``hub``, key), from a docs/config.md."""
    found = {}
    marker = ""
    for line in text.splitlines():
        if line.startswith("<!-- keys: "):
            marker = line.split()[2]
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))
                 ] if line.startswith("| `") else []
        if len(cells) == 4:
            found[(marker, cells[0].strip("`"))] = cells[3]
    return found


def render(text: str) -> str:
    """docs/config.md as it should be: ``text`` (the file as it is) with its key tables
    made again from the readers, keeping its prose and every description."""
    said = descriptions(text)
    out = []
    for marker, found in (("machine", machine_keys()), ("hub", hub_keys())):
        rows = ["| key | default | takes | what it does |", "|---|---|---|---|"]
        for key in sorted(found, key=_order):
            default, what = found[key]
            rows.append(f"| `{key}` | {_default(default)} | {_what(what)} | "
                        f"{said.get((marker, key), UNDESCRIBED)} |")
        out.append((marker, "\n".join(rows)))
    for marker, table in out:
        begin, end = f"<!-- keys: {marker} -->", f"<!-- end of keys: {marker} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"{DOC} has no {begin} ... {end} block")
        text = pattern.sub(lambda m, t=table, b=begin, e=end: f"{b}\n{t}\n{e}", text)
    return text


def _order(key: str) -> tuple:
    """Top-level keys first, then tables in the order a config file has them."""
    table = key.split(".")[0].split("[")[0] if "." in key else ""
    tables = ["", "serial", "sim", "gpio", "database", "control", "mqtt", "usage", "vend",
              "alerts", "schedule", "display", "speech", "privacy", "products", "slots", "web",
              "reports", "machines"]
    return (tables.index(table) if table in tables else len(tables), key)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    made = render(DOC.read_text())
    if argv == ["--write"]:
        DOC.write_text(made)
        missing = made.count(UNDESCRIBED)
        print(f"wrote {DOC}" + (f"; {missing} keys still to describe" if missing else ""))
        return 0
    sys.stdout.write(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The test machine, written once: the config the in-process tests, the process tests, the
campaign, the privacy audit and the bench start from.

:func:`machine` gives it as the dict the config reader takes; :func:`machine_toml` as the
file a daemon is started with. Two syringe slots and a foil slot by default, as a small
machine at a needle exchange might have.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

PRODUCTS = [
    {"id": "syringe-1ml", "name": "1ml syringes", "button": 1},
    {"id": "foil", "name": "foil", "button": 2},
]
SLOTS = [
    {"slot": 1, "product": "syringe-1ml", "capacity": 20, "low_at": 5},
    {"slot": 2, "product": "syringe-1ml", "capacity": 20, "low_at": 5},
    {"slot": 3, "product": "foil", "capacity": 10, "low_at": 2},
]


def known(*ids: str) -> list[dict]:
    """``[[machines]]`` entries for a hub's config: the hub stores only machines it knows."""
    return [{"id": i, "name": i} for i in ids]


def machine(machine_id: str = "e2e-01", hal: str = "sim", *, products: list[dict] | None = None,
            slots: list[dict] | None = None, capacity: int | None = None,
            **tables: dict[str, Any]) -> dict[str, Any]:
    """The machine as a config dict; ``capacity`` sets every slot's; ``tables`` are further
    tables (``serial={"port": "board.tty"}``), in the order given."""
    data: dict[str, Any] = {"machine_id": machine_id, "hal": hal}
    data.update(copy.deepcopy(tables))
    data["products"] = copy.deepcopy(products or PRODUCTS)
    data["slots"] = copy.deepcopy(slots or SLOTS)
    if capacity is not None:
        for slot in data["slots"]:
            slot["capacity"] = capacity
    return data


def machine_toml(machine_id: str = "e2e-01", hal: str = "sim", **options: Any) -> str:
    """The machine as a TOML file's text (the arguments are :func:`machine`'s)."""
    return to_toml(machine(machine_id, hal, **options))


def write_machine(folder: Path, machine_id: str = "e2e-01", hal: str = "sim",
                  **options: Any) -> Path:
    """Write ``folder/nspvend.toml`` and return its path."""
    path = folder / "nspvend.toml"
    path.write_text(machine_toml(machine_id, hal, **options))
    return path


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML for a config dict: plain keys first, then tables, then arrays of tables."""
    lines = [f"{key} = {_value(value)}" for key, value in data.items()
             if not isinstance(value, dict | list) or _is_plain_list(value)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{prefix}{key}]", to_toml(value, f"{prefix}{key}.").rstrip("\n")]
    for key, value in data.items():
        if isinstance(value, list) and not _is_plain_list(value):
            for item in value:
                lines += ["", f"[[{prefix}{key}]]",
                          to_toml(item, f"{prefix}{key}.").rstrip("\n")]
    text = "\n".join(lines).strip("\n")
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"


def _is_plain_list(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(v, dict) for v in value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)

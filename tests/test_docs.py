"""The documents say what the code does: every topic, field and command of the MQTT contract
in docs/hub.md, every config key in the README (or SPEC.md), as sqlite-utils checks that its
CLI is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from controller import commands, config, messages

ROOT = Path(__file__).resolve().parent.parent
HUB_MD = (ROOT / "docs" / "hub.md").read_text()


def sections(text: str) -> dict[str, str]:
    """``## `{root}/leaf` `` headings and the text under each."""
    found = {}
    parts = re.split(r"^## `\{root\}/([^`]+)`\s*$", text, flags=re.M)
    for leaf, body in zip(parts[1::2], parts[2::2], strict=True):
        found[leaf] = body.split("\n## ")[0]
    return found


def tables(body: str) -> list[list[str]]:
    """The first column (backticked names) of each Markdown table in ``body``, in order."""
    out, current = [], None
    for line in body.splitlines():
        if line.startswith("|---"):
            continue
        if line.startswith("|"):
            cell = line.split("|")[1].strip()
            if current is None:
                current = []  # the header row
                continue
            current.extend(re.findall(r"`([^`]+)`", cell))
        elif current is not None:
            out.append(current)
            current = None
    if current is not None:
        out.append(current)
    return out


def names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_topic_is_documented_and_nothing_else():
    assert set(sections(HUB_MD)) == set(messages.TOPICS)


@pytest.mark.parametrize("leaf", [leaf for leaf, t in messages.TOPICS.items() if t.message])
def test_every_field_of_every_payload_is_documented_and_nothing_else(leaf):
    topic = messages.TOPICS[leaf]
    documented = tables(sections(HUB_MD)[leaf])
    schema = set() if topic.message is messages.CommandResult else {"schema"}
    assert set(documented[0]) == names(topic.message) | schema
    if topic.message is messages.StockMessage:
        assert set(documented[1]) == names(messages.SlotStock)
        assert set(documented[2]) == names(messages.ProductStock)


@pytest.mark.parametrize("leaf", list(messages.TOPICS))
def test_retain_is_documented_as_the_code_does_it(leaf):
    body = sections(HUB_MD)[leaf]
    retained = body.lstrip().startswith("Retained")
    assert retained == messages.TOPICS[leaf].retain, leaf


def test_every_command_and_its_common_fields_are_documented():
    request, commands_table = tables(sections(HUB_MD)["cmd"])
    assert set(request) == commands.COMMON
    assert set(commands_table) == set(commands.COMMANDS)


def all_config_keys() -> set[str]:
    """Every key the config reader looks at, from reading a config with every table."""
    seen: set[str] = set()
    original = config._Table.get

    def spy(self, name, *args, **kwargs):
        seen.add(self.key(name))
        return original(self, name, *args, **kwargs)

    text = (ROOT / "simulator" / "demo.toml").read_text()
    data = config.tomllib.loads(text)
    data["mqtt"] = {"host": "127.0.0.1"}
    config._Table.get = spy
    try:
        config.parse_config(data, str(ROOT / "simulator" / "demo.toml"))
        data = {**data, "hal": "gpio", "gpio": {"pin_factory": "mock", "motors": list(range(2, 9)),
                                                "buttons": list(range(9, 17)), "drop_sensor": 17}}
        config.parse_config(data, str(ROOT / "simulator" / "demo.toml"))
    finally:
        config._Table.get = original
    return {re.sub(r"\[\d+\]", "", key) for key in seen}


def test_every_config_key_is_in_the_readme_or_the_spec():
    spec = ROOT.parent / "shared" / "SPEC.md"
    text = "".join((ROOT / name).read_text() for name in (
        "README.md", "docs/wiring.md", "docs/screen-and-voice.md")) + (
        spec.read_text() if spec.exists() else "")
    keys = all_config_keys()
    assert len(keys) > 40
    missing = [key for key in sorted(keys) if f"`{key}`" not in text and not in_a_toml_block(
        text, *key.rpartition(".")[::2])]
    assert missing == []


def in_a_toml_block(text: str, table: str, name: str) -> bool:
    """Whether an example TOML block sets ``name`` in ``[table]`` (or at the top)."""
    if not table:
        return re.search(rf"^{re.escape(name)}\s*=", text, re.M) is not None
    for header in re.finditer(rf"^\[+{re.escape(table.split('.')[0])}\]+\s*(#.*)?$", text, re.M):
        block = re.split(r"^(?:\[|```)", text[header.end():], maxsplit=1, flags=re.M)[0]
        if re.search(rf"^#?\s*{re.escape(name)}\s*=", block, re.M):
            return True
    return False

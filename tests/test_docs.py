"""The documents say what the code does: every topic, field and command of the MQTT contract
in docs/hub.md, every config key in docs/config.md, as sqlite-utils checks that its CLI is
documented."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from controller import commands, messages
from hub import configdoc

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


def test_docs_config_md_is_what_the_config_readers_make():
    """Every key either reader accepts, its default and what it takes, as the code has them;
    each described (``python -m hub.configdoc --write`` after changing a reader)."""
    text = configdoc.DOC.read_text()
    assert configdoc.render(text) == text, "run: python -m hub.configdoc --write"
    assert configdoc.UNDESCRIBED not in text
    assert len(configdoc.machine_keys()) > 80 and len(configdoc.hub_keys()) > 30


def test_the_configs_docs_config_md_is_made_from_reach_every_key_the_readers_name():
    """Every key name written in either reader is among those the doc's configs reached, so
    a key read only on some branch (a display kind, PostgreSQL) is not left out."""
    reached = {key.rsplit(".", 1)[-1].replace("[]", "")
               for key in {**configdoc.machine_keys(), **configdoc.hub_keys()}}
    named = set()
    for source in (ROOT / "controller" / "config.py", ROOT / "hub" / "config.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"get", "text", "integer", "number", "flag", "strings"}
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                named.add(node.args[0].value)
    assert named - reached == set()
    assert len(named) > 60


def hub_section(title: str) -> str:
    return HUB_MD.split(f"## {title}")[1].split("\n## ")[0].split("\n# ")[0]


def test_every_page_and_endpoint_of_the_hub_is_in_docs_hub_md():
    source = (ROOT / "hub" / "web.py").read_text()
    paths = set(re.findall(r'Route\("([^"]+)"', source)) | {"/static/..."}
    documented = set()
    for cell in tables(hub_section("Pages and endpoints"))[0]:
        documented |= {part.split()[-1].split("?")[0] for part in cell.split(", ")}
    assert paths - documented == set()


def test_every_hub_command_is_in_docs_hub_md():
    source = (ROOT / "hub" / "cli.py").read_text()
    names = set(re.findall(r'add_parser\(\s*"([a-z]+)"', source)) - {"user"}
    documented = " ".join(tables(hub_section("The command line"))[0])
    assert len(names) >= 6
    assert {n for n in names if f"hub {n}" not in documented and f"user {n}" not in documented
            } == set()


def test_no_file_in_the_repository_points_outside_it():
    """The repository stands on its own: nothing names the product's original specification
    or the folder beside the checkout it lived in (the names are built here, so that this
    file does not name them either)."""
    outside = ("/".join(("..", "shared")), "SPEC" + ".md")
    found = []
    for path in ROOT.rglob("*"):
        if (any(part.startswith(".") or part in ("mutants", "__pycache__", "build")
                for part in path.relative_to(ROOT).parts)
                or not path.is_file() or path.suffix in (".png", ".lock", ".pyc")):
            continue
        text = path.read_text(errors="replace")
        if any(name in text for name in outside):
            found.append(str(path.relative_to(ROOT)))
    assert found == []

"""Commands from the hub: signed with the machine's key, short-lived, and never run twice."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest

from controller.clock import iso
from controller.commands import run_command
from controller.messages import canonical_command, sign_command
from tests.conftest import Rig, make_config
from tests.test_commands import snapshot

KEY = "correct horse battery staple"


@pytest.fixture
def signed(tmp_path) -> Rig:
    key_file = tmp_path / "command.key"
    key_file.write_text(f"{KEY}\n")
    rig = Rig(make_config(tmp_path, mqtt={"host": "127.0.0.1", "command_key_file": str(key_file)}))
    rig.fill_all()
    return rig


def hub(rig: Rig, command: dict, key: str | None = KEY, expires_in: float | None = 600) -> dict:
    """Send ``command`` as the hub does: with ``expires`` and signed."""
    if expires_in is not None:
        command = {**command, "expires": iso(rig.clock.now() + timedelta(seconds=expires_in))}
    if key is not None:
        command = sign_command(command, key)
    return run_command(rig.vm, command, "hub")


def test_the_signature_is_the_hmac_the_spec_defines():
    command = {"id": "c1", "cmd": "set_messages", "messages": ["Café ouvert"],
               "expires": "2026-11-25T03:00:00Z"}
    text = json.dumps(command, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_command({**command, "sig": "x"}) == text.encode("utf-8")
    expected = hmac.new(KEY.encode(), text.encode("utf-8"), hashlib.sha256).hexdigest()
    assert sign_command(command, KEY)["sig"] == expected


def test_a_signed_command_from_the_hub_runs(signed):
    answer = hub(signed, {"id": "ok-1", "cmd": "set_mode", "mode": "out_of_service"})
    assert answer["ok"], answer
    assert signed.vm.mode == "out_of_service"


@pytest.mark.parametrize("how, error", [
    (dict(key=None), "sig: missing or wrong"),
    (dict(key="not the key"), "sig: missing or wrong"),
    (dict(key=KEY, expires_in=None), "expires: is missing"),
    (dict(key=KEY, expires_in=-1), "expires: the command expired"),
    (dict(key=KEY, expires_in=86400 + 60), "expires: 2026-11-26T02:01:00Z is more than 86400 s"),
])
def test_an_unsigned_forged_expired_or_far_ahead_command_is_refused_and_changes_nothing(
        signed, how, error):
    before = snapshot(signed)
    answer = hub(signed, {"id": "bad-1", "cmd": "set_mode", "mode": "out_of_service"}, **how)
    assert answer["ok"] is False and answer["error"].startswith(error), answer
    assert snapshot(signed) == before


def test_a_tampered_command_is_refused(signed):
    command = sign_command({"id": "t1", "cmd": "refill", "slot": 1, "count": 10,
                            "expires": iso(signed.clock.now() + timedelta(minutes=5))}, KEY)
    command["count"] = 0  # changed on the way
    before = snapshot(signed)
    assert run_command(signed.vm, command, "hub")["error"].startswith("sig:")
    assert snapshot(signed) == before


def test_staff_at_the_machine_need_no_signature(signed):
    assert run_command(signed.vm, {"id": "l1", "cmd": "disable", "slot": 2}, "local")["ok"]


def test_a_replay_after_thousands_of_newer_commands_still_does_not_run_again(signed):
    capture = sign_command({"id": "captured", "cmd": "set_mode", "mode": "out_of_service",
                            "expires": iso(signed.clock.now() + timedelta(hours=6))}, KEY)
    first = run_command(signed.vm, capture, "hub")
    assert first["ok"]
    assert hub(signed, {"id": "back", "cmd": "set_mode", "mode": "in_service"})["ok"]
    for i in range(2000):
        assert hub(signed, {"id": f"n{i}", "cmd": "enable", "slot": 1 + i % 4})["ok"]
    signed.clock.advance(3600)
    assert run_command(signed.vm, capture, "hub") == first  # the first answer, not a second run
    assert signed.vm.mode == "in_service"
    signed.clock.advance(5 * 3600 + 1)  # past its expiry: forgotten, and refused as expired
    assert hub(signed, {"id": "later", "cmd": "enable", "slot": 1})["ok"]
    again = run_command(signed.vm, capture, "hub")
    assert again["ok"] is False and again["error"].startswith("expires:")
    assert signed.vm.mode == "in_service"


def test_a_command_without_expires_is_remembered_for_the_longest_life_a_command_may_have(rig):
    assert rig.command(id="once", cmd="disable", slot=2)["ok"]
    assert rig.command(cmd="enable", slot=2)["ok"]
    rig.clock.advance(86400 - 60)
    assert rig.command(id="once", cmd="disable", slot=2)["ok"]
    assert rig.vm.slots[2].enabled  # a replay: answered, not run


def test_an_expiry_out_of_range_names_the_field(rig):
    answer = rig.command(cmd="status", expires="0001-01-01T00:00:00+14:00")
    assert answer["ok"] is False and answer["error"].startswith("expires: must be an ISO 8601")


def test_set_messages_takes_one_printable_line_each(rig):
    before = snapshot(rig)
    answer = rig.command(cmd="set_messages", messages=["ok", "two\nlines"])
    assert answer["error"].startswith("messages[1]: must be one line of printable text")
    assert snapshot(rig) == before

"""The board link's frames: intact ones decode, damaged ones are dropped, garbage resyncs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_py.protocol import Framer, crc16, decode, encode, hex_text, message, read, unhex_text

WORDS = st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.",
                         min_size=1, max_size=12), min_size=1, max_size=8)


def test_crc16_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1


def test_a_frame_is_one_readable_line():
    assert encode("V", 42, 3) == b"V 42 3*B6DA\n"


@given(WORDS)
def test_frames_round_trip(words):
    assert decode(encode(*words)[:-1]) == words


@given(WORDS, st.data())
def test_any_single_damaged_byte_is_caught(words, data):
    frame = bytearray(encode(*words)[:-1])
    i = data.draw(st.integers(0, len(frame) - 1))
    flip = data.draw(st.integers(1, 255))
    frame[i] ^= flip
    assert decode(bytes(frame)) is None


@given(st.binary(max_size=300), WORDS)
def test_garbage_before_a_frame_never_hides_it(garbage, words):
    framer = Framer()
    got = framer.feed(garbage.replace(b"\n", b"") + b"\n")
    got += framer.feed(encode(*words))
    assert got[-1] == words


def test_frames_split_across_reads_are_reassembled():
    framer = Framer()
    data = encode("E", 1, "abcd", "btn", 3) + encode("D", 7, "ok")
    frames = []
    for i in range(len(data)):
        frames += framer.feed(data[i:i + 1])
    assert frames == [["E", "1", "abcd", "btn", "3"], ["D", "7", "ok"]]


def test_display_text_survives_the_frame():
    assert unhex_text(hex_text("Thank you * 100% ✓")) == "Thank you * 100% ✓"


def test_the_readme_shows_every_message_as_protocol_py_declares_it():
    from pathlib import Path

    from firmware_py.protocol import MESSAGES

    readme = (Path(__file__).resolve().parent.parent / "firmware_py" / "README.md").read_text()
    rows = re.findall(r"^\| `(\w)` \| `(\w+)` \| `([^`]*)` \|", readme, re.M)
    assert [(letter, name, tuple(fields.split())) for letter, name, fields in rows] == [
        (letter, name, fields) for letter, name, fields in MESSAGES]


def test_messages_are_built_and_read_by_name():
    assert message("vend", seq=42, slot=3) == encode("V", 42, 3)
    assert read(["V", "42", "3"]) == ("vend", {"seq": "42", "slot": "3", "boot": None})
    assert read(["T", "7", "6869", "7468657265"]) == ("text", {"id": "7", "lines": [
        "6869", "7468657265"]})
    assert read(["D", "42"]) == ("done", None)  # the outcome is missing
    assert read(["Z", "1"]) == (None, None)


def test_a_misspelt_field_is_an_error_not_a_silent_misreading():
    with pytest.raises(ValueError, match="vend has no field slto"):
        message("vend", seq=1, slot=2, slto=3)
    with pytest.raises(ValueError, match="vend: slot is missing"):
        message("vend", seq=1)

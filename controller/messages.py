"""The MQTT contract's wire format, shared by the machine and whatever reads or commands it.

Payloads are compact JSON (never NaN: that is not JSON); commands are read with a
bound on size and nesting before any parser sees them; a command from the hub is
signed with HMAC-SHA256 over its canonical JSON (SPEC.md, "Commands").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

MAX_COMMAND_BYTES = 16 * 1024
MAX_NESTING = 32  # a command is two levels deep; far deeper is an attack on the parser


def compact(payload: dict) -> str:
    """A payload as the contract sends it: compact JSON, refusing NaN and infinities."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def decode_request(payload: bytes) -> tuple[Any, dict | None]:
    """A command's bytes as JSON, or the answer refusing them (the rest is ``run_command``'s)."""
    if len(payload) > MAX_COMMAND_BYTES:
        return None, {"id": None, "ok": False,
                      "error": f"request: larger than {MAX_COMMAND_BYTES} bytes"}
    if nesting(payload) > MAX_NESTING:
        return None, {"id": None, "ok": False,
                      "error": f"request: nested deeper than {MAX_NESTING} levels"}
    try:
        return json.loads(payload), None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, {"id": None, "ok": False, "error": "request: not valid JSON"}


def nesting(payload: bytes) -> int:
    """How deep ``[`` and ``{`` nest outside strings (before parsing: no recursion limits)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


# -- signed commands --------------------------------------------------------------------------
def canonical_command(command: dict) -> bytes:
    """The bytes a command's signature covers: the command without ``sig``, keys sorted."""
    unsigned = {k: v for k, v in command.items() if k != "sig"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def command_signature(command: dict, key: str) -> str:
    """The lowercase hex HMAC-SHA256 of :func:`canonical_command`, keyed with ``key``."""
    return hmac.new(key.encode("utf-8"), canonical_command(command), hashlib.sha256).hexdigest()


def sign_command(command: dict, key: str) -> dict:
    """``command`` with its ``sig`` (the hub's side; it must carry ``expires`` already)."""
    return {**command, "sig": command_signature(command, key)}


def signature_ok(command: dict, key: str) -> bool:
    """Whether ``command["sig"]`` is the signature of the rest under ``key``."""
    sig = command.get("sig")
    if not isinstance(sig, str):
        return False
    try:
        return hmac.compare_digest(sig, command_signature(command, key))
    except (TypeError, ValueError):  # a sig with characters no signature has
        return False


def read_key(path: str) -> str:
    """A command key file's secret: its text, stripped (raises OSError, ValueError)."""
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise ValueError("is empty")
    return key

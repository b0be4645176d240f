"""The simulator's control socket: JSON lines to press buttons, inject faults and read the truth.

Requests (docs/simulator.md): ``{"op": "press", "button": N}``, ``{"op": "state"}``,
``{"op": "fault", "slot": N, "kind": "jam"|"empty"|"motor_dead"|"clear"}`` (``kind``
``"sensor_stuck"`` and ``"board_silent"`` need no slot), ``{"op": "door", "open": bool}``,
``{"op": "bin", "full": bool}``, ``{"op": "load", "slot": N, "count": K}``.
Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "FIELD: problem"}``.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from simulator.model import FAULT_KINDS, PhysicalMachine

log = logging.getLogger(__name__)


def answer(model: PhysicalMachine, press: Callable[[int], None], request: Any,
           extra_state: Callable[[], dict] | None = None,
           extra_ops: dict[str, Callable[[dict], None]] | None = None) -> dict:
    """Carry out one control request on ``model``; ``press`` presses a product button;
    ``extra_state`` adds to the ``state`` answer (the board simulator's link state);
    ``extra_ops`` are further operations (the board simulator's ``reboot``)."""
    if not isinstance(request, dict):
        return {"ok": False, "error": "request: must be a JSON object"}
    op = request.get("op")
    if extra_ops and op in extra_ops:
        extra_ops[op](request)
        return {"ok": True}

    def integer(name: str, low: int = 0) -> int:
        value = request.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: must be a whole number of at least {low}")
        return value

    def flag(name: str) -> bool:
        value = request.get(name)
        if not isinstance(value, bool):
            raise ValueError(f"{name}: must be true or false")
        return value

    try:
        if op == "press":
            press(integer("button", 1))
        elif op == "state":
            return {"ok": True, **model.snapshot(), **(extra_state() if extra_state else {})}
        elif op == "fault":
            kind = request.get("kind")
            if kind not in FAULT_KINDS:
                raise ValueError(f"kind: must be one of {', '.join(FAULT_KINDS)}")
            slot = request.get("slot")
            if slot is not None or kind not in ("sensor_stuck", "board_silent", "clear"):
                slot = integer("slot", 1)
                if slot not in model.slots:
                    raise ValueError(f"slot: no slot {slot}; slots are 1..{len(model.slots)}")
            model.inject(kind, slot)
        elif op == "door":
            model.set_door(flag("open"))
        elif op == "bin":
            model.set_sharps_bin_full(flag("full"))
        elif op == "load":
            slot = integer("slot", 1)
            if slot not in model.slots:
                raise ValueError(f"slot: no slot {slot}; slots are 1..{len(model.slots)}")
            model.load(slot, integer("count"))
        else:
            raise ValueError("op: must be one of press, state, fault, door, bin, load")
    except ValueError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True}


class _Handler(socketserver.StreamRequestHandler):
    server: SimulatorControl

    def handle(self) -> None:
        for line in self.rfile:
            try:
                request = json.loads(line)
            except ValueError:
                reply = {"ok": False, "error": "request: not valid JSON"}
            else:
                reply = answer(self.server.model, self.server.press, request,
                               self.server.extra_state, self.server.extra_ops)
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class SimulatorControl(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves :func:`answer` on a Unix socket at ``path`` in a background thread."""

    daemon_threads = True

    def __init__(self, path: str, model: PhysicalMachine, press: Callable[[int], None],
                 extra_state: Callable[[], dict] | None = None,
                 extra_ops: dict[str, Callable[[dict], None]] | None = None) -> None:
        self.path, self.model, self.press, self.extra_state = path, model, press, extra_state
        self.extra_ops = extra_ops
        if os.path.exists(path):
            os.unlink(path)
        super().__init__(path, _Handler)
        threading.Thread(target=self.serve_forever, name="sim-control", daemon=True).start()
        log.info("simulator control socket at %s", path)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

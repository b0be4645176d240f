"""The firmware on a bench: under the MicroPython unix port, on a pty, with a tiny world.

    micropython firmware_py/bench.py LINK CONTROL [TURN_MS] [SLOTS] [PROTOCOL]

LINK is the tty the host talks to; CONTROL is a tty on which JSON lines change
the world (the ops of the simulator's control socket: press, state, fault, door,
bin, load) and get answers. Tests use this to run the real firmware under the
real interpreter. PROTOCOL makes the board claim another link protocol version, to test
that a host refuses a board it does not understand.
"""

import json
import os
import sys

from firmware_py.board import Board, Timing
from firmware_py.lcd import Lcd
from firmware_py.pins import TimedPins


class BenchWorld:
    """Just enough physics for the firmware: packs per slot, jams, a dead motor, the beam."""

    def __init__(self, slots):
        self.packs = [0] * (slots + 1)
        self.dropped = [0] * (slots + 1)
        self.jammed = [False] * (slots + 1)
        self.dead = [False] * (slots + 1)
        self.sensor_stuck = False
        self.door_open = False
        self.sharps_bin_full = False
        self.temperature_c = 14.0

    def plan_turn(self, slot):
        if self.dead[slot]:
            return False, False
        return True, not self.jammed[slot] and self.packs[slot] > 0

    def drop(self, slot):
        if self.packs[slot] > 0:
            self.packs[slot] -= 1
            self.dropped[slot] += 1


def apply(world, pins, request):
    """One control request, the same ops as the simulator's control socket."""
    op = request.get("op")
    slot = request.get("slot")
    if op == "press":
        pins.press(request["button"])
    elif op == "load":
        world.packs[slot] = request["count"]
    elif op == "door":
        world.door_open = request["open"]
    elif op == "bin":
        world.sharps_bin_full = request["full"]
    elif op == "fault":
        kind = request["kind"]
        if kind == "jam":
            world.jammed[slot] = True
        elif kind == "empty":
            world.packs[slot] = 0
        elif kind == "motor_dead":
            world.dead[slot] = True
        elif kind == "sensor_stuck":
            world.sensor_stuck = True
        elif kind == "clear":
            for i in range(len(world.jammed)):
                if slot is None or i == slot:
                    world.jammed[i] = world.dead[i] = False
            if slot is None:
                world.sensor_stuck = False
        else:
            return {"ok": False, "error": "kind: unknown"}
    elif op == "state":
        return {"ok": True, "slots": [
            {"slot": i, "packs_left": world.packs[i], "packs_dropped": world.dropped[i]}
            for i in range(1, len(world.packs))], "motor_running": list(pins.running),
            "door_open": world.door_open, "lines": pins.lines, "led": pins.led_state,
            "lcd_bytes": list(world.lcd_bus.data) if hasattr(world, "lcd_bus") else []}
    else:
        return {"ok": False, "error": "op: unknown"}
    return {"ok": True}


class RecordingI2C:
    """The LCD's I2C bus on the bench: keeps every byte written to the backpack."""

    def __init__(self):
        self.data = bytearray()

    def writeto(self, address, data):
        self.data.extend(data)


class LineReader:
    def __init__(self, f, on_line):
        self.f = f
        self.buffer = b""
        self.on_line = on_line

    def __call__(self):
        c = self.f.read(1)
        if c == b"\n":
            line, self.buffer = self.buffer, b""
            if line.strip():
                self.on_line(line)
        else:
            self.buffer += c


def main(argv):
    import termios

    from firmware_py.loop import serve

    link_path, control_path = argv[1], argv[2]
    turn_ms = int(argv[3]) if len(argv) > 3 else 60
    slots = int(argv[4]) if len(argv) > 4 else 4
    link = open(link_path, "r+b")
    control = open(control_path, "r+b")
    for f in (link, control):
        termios.setraw(f.fileno())
    world = BenchWorld(slots)
    bus = RecordingI2C()
    pins = TimedPins(world, slots, buttons=6, turn_ms=turn_ms, lcd=Lcd(bus))
    world.lcd_bus = bus
    boot_id = "".join("%02x" % b for b in os.urandom(4))
    timing = Timing(motor_timeout=turn_ms * 4 + 100, drop_window=turn_ms * 2 + 50,
                    min_turn=turn_ms // 2)
    if len(argv) > 5:
        board = Board(pins, link.write, boot_id, timing, protocol=int(argv[5]))
    else:
        board = Board(pins, link.write, boot_id, timing)

    def on_control(line):
        try:
            reply = apply(world, pins, json.loads(line))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            reply = {"ok": False, "error": "request: %s" % e}
        control.write(json.dumps(reply).encode() + b"\n")

    sys.stdout.write("bench board %s up\n" % boot_id)
    serve(board, link, others=[(control, LineReader(control, on_control))])


main(sys.argv)

"""The board's logic: the vend cycle, input scanning, and the link protocol.

Plain MicroPython that also runs under CPython. It touches hardware only
through a *pins* object (see ``pins.py``) and time only through ``ticks``, and
is driven by calling :meth:`Board.receive` with each intact frame and
:meth:`Board.poll` as often as possible (every millisecond or so).
"""

from firmware_py.protocol import PROTOCOL, message, read, unhex_text
from firmware_py.ticks import ticks_diff, ticks_ms

VERSION = "3"  # the firmware's own version (the link's is protocol.PROTOCOL); 3: glyphs
MEMORY = 32  # vend outcomes remembered, by sequence number

# Outcome words on the wire
DROPPED = "ok"
NOTHING_DROPPED = "nodrop"
STALLED = "stall"
BLIND = "blind"  # the drop beam was blocked before the motor started: cannot tell


class Timing:
    """How long things may take, in milliseconds."""

    def __init__(self, motor_timeout=4000, drop_window=1500, min_turn=100, debounce=20,
                 event_retry=300, beam_clear=500):
        self.motor_timeout = motor_timeout  # motor on without reaching home: stalled
        self.drop_window = drop_window  # after home, how long a pack may take to fall
        self.min_turn = min_turn  # ignore the home switch this soon after starting
        self.debounce = debounce  # an input must hold this long to count
        self.event_retry = event_retry  # resend an unacknowledged event after this
        self.beam_clear = beam_clear  # wait this long for the beam to clear before a turn


class _Input:
    """One debounced digital input."""

    def __init__(self, value):
        self.stable = value
        self.candidate = value
        self.since = 0

    def update(self, value, now, debounce):
        """Feed a raw sample; return True when the stable value has just changed."""
        if value != self.candidate:
            self.candidate = value
            self.since = now
            return False
        if value != self.stable and ticks_diff(now, self.since) >= debounce:
            self.stable = value
            return True
        return False


class Board:
    """The dispenser board: answers the host, runs vends, reports inputs.

    ``pins`` is the hardware layer; ``send(bytes)`` writes to the host;
    ``boot_id`` is a fresh random word each power-up.
    """

    def __init__(self, pins, send, boot_id, timing=None, protocol=PROTOCOL):
        self.pins = pins
        self.send = send
        self.boot_id = boot_id
        self.timing = timing or Timing()
        self.protocol = protocol  # what the hello says (another value only on a test bench)
        self.results = {}  # seq -> outcome word
        self.order = []  # seqs in results, oldest first
        self.vend = None  # the vend in progress, a dict
        self.events = []  # unacknowledged events: [k, words, last_sent]
        self.next_event = 1
        self.buttons = [_Input(False) for _ in range(pins.button_count())]
        self.door = _Input(pins.door())
        self.bin = _Input(pins.bin_full())

    def start(self):
        """Power-up: every motor off, then tell the host who we are."""
        self.pins.all_off()
        self.event("boot", self.boot_id, self.pins.slot_count(), VERSION, self.protocol)

    # -- from the host ------------------------------------------------------
    def receive(self, words):
        """Act on one intact frame from the host."""
        name, f = read(words)
        if name is None or f is None:
            if len(words) > 1 and words[1].isdigit():
                self.reply("refused", id=words[1], why="unknown" if name is None else "malformed")
            return
        try:
            if name == "vend":
                self._vend_request(int(f["seq"]), int(f["slot"]), f["boot"])
            elif name == "recall":
                self._result_request(int(f["seq"]))
            elif name == "ack":
                self._acknowledged(int(f["k"]))
            elif name == "hello":
                temp = self.pins.temperature()
                self.reply("board", id=f["id"], protocol=self.protocol, boot=self.boot_id,
                           slots=self.pins.slot_count(), door=int(self.door.stable),
                           bin=int(self.bin.stable),
                           temp="-" if temp is None else "%.1f" % temp, firmware=VERSION,
                           highest=self._highest())
            elif name == "light":
                self.pins.led(f["state"])
                self.reply("done_ok", id=f["id"])
            elif name == "text":
                self.pins.show([unhex_text(w) for w in f["lines"]])
                self.reply("done_ok", id=f["id"])
            elif name == "glyph":
                code, rows = int(f["code"]), [int(r) for r in f["rows"]]
                if not 0 <= code < 8 or len(rows) != 8 or not all(0 <= r < 32 for r in rows):
                    raise ValueError("glyph")
                self.pins.glyph(code, rows)
                self.reply("done_ok", id=f["id"])
            else:
                self.reply("refused", id=words[1], why="unknown")
        except (IndexError, ValueError):
            self.reply("refused", id=words[1], why="malformed")

    def _vend_request(self, seq, slot, boot=None):
        if boot is not None and boot != self.boot_id:
            # meant for the board as it was before a restart: that one may have turned already
            self._unknown(seq)
            return
        if seq in self.results:
            self.reply("done", seq=seq, outcome=self.results[seq])
        elif self.vend is not None and self.vend["seq"] == seq:
            self.reply("accepted", seq=seq)
        elif self.vend is not None:
            self.reply("busy", seq=seq)
        elif not 1 <= slot <= self.pins.slot_count():
            self.reply("refused", id=seq, why="slot")
        else:
            self._start_vend(seq, slot)
            self.reply("accepted", seq=seq)

    def _unknown(self, seq):
        self.reply("unknown", seq=seq, boot=self.boot_id, oldest=self.order[0] if self.order else 0)

    def _highest(self):
        """The highest vend number this boot has seen (0: none), so a host that lost its
        own count never reuses one."""
        seqs = list(self.order)
        if self.vend is not None:
            seqs.append(self.vend["seq"])
        return max(seqs) if seqs else 0

    def _result_request(self, seq):
        if seq in self.results:
            self.reply("done", seq=seq, outcome=self.results[seq])
        elif self.vend is not None and self.vend["seq"] == seq:
            self.reply("accepted", seq=seq)
        else:
            # Never heard of it in this boot; the host compares boot ids to tell
            # "never got it" from "forgot it in a restart".
            self._unknown(seq)

    def _acknowledged(self, k):
        self.events = [e for e in self.events if e[0] != k]

    def reply(self, name, **fields):
        self.send(message(name, **fields))

    # -- to the host --------------------------------------------------------
    def event(self, what, *args):
        """Report something until the host acknowledges it (``K k``)."""
        k = self.next_event
        self.next_event += 1
        frame = message("event", k=k, boot=self.boot_id, what=what, args=list(args))
        self.events.append([k, frame, ticks_ms()])
        self.send(frame)

    # -- the loop -----------------------------------------------------------
    def poll(self):
        """Do whatever is due now: the vend cycle, inputs, event resends."""
        now = ticks_ms()
        if self.vend is not None:
            self._step_vend(now)
        self._scan_inputs(now)
        for e in self.events:
            if ticks_diff(now, e[2]) >= self.timing.event_retry:
                e[2] = now
                self.send(e[1])

    def _scan_inputs(self, now):
        debounce = self.timing.debounce
        for i, button in enumerate(self.buttons):
            if button.update(self.pins.button(i + 1), now, debounce) and button.stable:
                self.event("btn", i + 1)
        if self.door.update(self.pins.door(), now, debounce):
            self.event("door", int(self.door.stable))
        if self.bin.update(self.pins.bin_full(), now, debounce):
            self.event("bin", int(self.bin.stable))

    def _start_vend(self, seq, slot):
        self.vend = {"seq": seq, "slot": slot, "asked": ticks_ms(), "started": None,
                     "left_home": False, "homed": None, "seen": False, "blind": False}

    def _step_vend(self, now):
        v = self.vend
        t = self.timing
        slot = v["slot"]
        if v["started"] is None:
            # The last pack may still be falling: let the beam clear before turning. A beam
            # that stays blocked is stuck; turn anyway (access first) but say we are blind.
            if self.pins.beam() and ticks_diff(now, v["asked"]) < t.beam_clear:
                return
            v["blind"] = self.pins.beam()
            v["started"] = now
            self.pins.motor(slot, True)
            return
        if not v["blind"] and self.pins.beam():
            v["seen"] = True
        if v["homed"] is None:
            at_home = self.pins.home(slot)
            if not at_home:
                v["left_home"] = True
            elapsed = ticks_diff(now, v["started"])
            if at_home and v["left_home"] and elapsed >= t.min_turn:
                self.pins.motor(slot, False)
                v["homed"] = now
            elif elapsed >= t.motor_timeout:
                self.pins.motor(slot, False)
                self._finish(STALLED)
            return
        if v["seen"]:
            self._finish(DROPPED)
        elif v["blind"]:
            self._finish(BLIND)
        elif ticks_diff(now, v["homed"]) >= t.drop_window:
            self._finish(NOTHING_DROPPED)

    def _finish(self, outcome):
        seq = self.vend["seq"]
        self.vend = None
        self.results[seq] = outcome
        self.order.append(seq)
        while len(self.order) > MEMORY:
            del self.results[self.order.pop(0)]
        self.reply("done", seq=seq, outcome=outcome)

    def stop(self):
        """Every output off (shutdown, exceptions)."""
        self.pins.all_off()

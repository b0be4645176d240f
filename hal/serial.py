"""The ``serial`` backend: a dispenser board (firmware_py/) reached over USB/UART with pyserial.

The port is opened by URL (``/dev/ttyACM0``, a pty path, ``loop://``...), so a
test can swap the wire. A reader thread parses frames, acknowledges the board's
events (buttons, door, bin, boot) and hands them on; requests from the core
thread wait for their replies with timeouts and retries. When the port vanishes
(USB unplugged, board reset) the link reopens it and reports board_offline /
board_online; a board that restarted is reported so the controller reconciles.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from typing import Any

import serial

from firmware_py.protocol import PROTOCOL, Framer, hex_text, message, number_field, read
from hal import (
    BoardFault,
    BoardLink,
    ButtonPressed,
    DoorChanged,
    EventSink,
    HardwareEvent,
    SharpsBinChanged,
    VendOutcome,
)
from hal.hd44780 import custom, render_pages
from hal.screens import PagedDisplay, Screen, fold
from hal.settings import SerialSettings

log = logging.getLogger(__name__)

OUTCOMES = {
    "ok": VendOutcome.DROPPED,
    "nodrop": VendOutcome.NOTHING_DROPPED,
    "stall": VendOutcome.MOTOR_STALLED,
    "blind": VendOutcome.UNCERTAIN,
}
REQUEST_IDS_FROM = 1 << 30  # ids of non-vend requests, far from vend sequence numbers
Reply = tuple[str, dict[str, Any]]  # a message's name and its named fields


class LinkTiming:
    """Seconds the host waits for the board."""

    def __init__(self, reply: float = 0.3, tries: int = 6, vend: float = 10.0,
                 ping: float = 1.0, missed_pings: int = 3, reopen: float = 0.5) -> None:
        self.reply, self.tries, self.vend = reply, tries, vend
        self.ping, self.missed_pings, self.reopen = ping, missed_pings, reopen


class BoardConnection:
    """The framed link to one board: requests with retries, events with acknowledgements."""

    def __init__(self, url: str, baud: int = 115200, timing: LinkTiming | None = None) -> None:
        self.url, self.baud = url, baud
        self.timing = timing or LinkTiming()
        self.sink: EventSink | None = None
        self.boot: str | None = None
        self.highest_seq = 0  # the board's, from its hello
        self.slots = 0
        self.door = False
        self.bin_full = False
        self.temperature: float | None = None
        self.online = False
        self._port: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._waiters: dict[int, queue.SimpleQueue] = {}
        self._waiters_lock = threading.Lock()
        self._next_id = REQUEST_IDS_FROM
        self._seen: dict[str, set[int]] = {}
        self._last_heard = 0.0
        self._last_ping = 0.0
        self._closed = threading.Event()
        self._connected = threading.Event()
        self._paused = threading.Event()  # nspvend board update has the port (pause)
        self._hold = threading.Event()  # the reader has let go of the port while paused
        self._pending_events: list[HardwareEvent] = []
        self._thread = threading.Thread(target=self._run, name="board-link", daemon=True)
        self.display_lines: list[str] = []
        self.display_glyphs: list[list[int]] = []  # custom characters 0.. for those lines
        self.led_state = "off"
        self.frames_dropped = 0
        self._hello_problem: str | None = None
        self.protocol_problem: str | None = None
        self.firmware: str | None = None

    # -- life cycle -------------------------------------------------------------
    def open(self, wait: float = 3.0) -> None:
        """Start the link; wait up to ``wait`` seconds for the board to answer."""
        self._thread.start()
        if not self._connected.wait(wait):
            log.warning("no answer from the board on %s yet; carrying on, will keep trying",
                        self.url)

    def start_events(self, sink: EventSink) -> None:
        self.sink = sink
        for event in self._pending_events:
            sink(event)
        self._pending_events.clear()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._close_port()

    # -- requests (core thread) -------------------------------------------------
    def request(self, name: str, expect: tuple[str, ...] = (), tries: int | None = None,
                wait: float | None = None, **fields: Any) -> Reply | None:
        """Send message ``name`` (its number a fresh request id unless given), resending until
        a reply of a kind in ``expect`` comes back: ``(name, fields)``, or None."""
        key = number_field(name)
        if fields.get(key) is None:
            self._next_id += 1
            fields[key] = self._next_id
        ident = int(fields[key])
        frame = message(name, **fields)
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        with self._waiters_lock:
            self._waiters[ident] = inbox
        try:
            for _ in range(tries or self.timing.tries):
                if not self._send(frame):
                    time.sleep(self.timing.reply)  # port closed: give it a moment to come back
                    continue
                deadline = time.monotonic() + (wait or self.timing.reply)
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        reply = inbox.get(timeout=left)
                    except queue.Empty:
                        break
                    if not expect or reply[0] in expect:
                        return reply
            return None
        finally:
            with self._waiters_lock:
                self._waiters.pop(ident, None)

    def wait_for(self, kinds: tuple[str, ...], seconds: float, resend: str,
                 **fields: Any) -> Reply | None:
        """Wait up to ``seconds`` for a reply of ``kinds``, sending ``resend`` now and then."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            reply = self.request(resend, expect=kinds + ("accepted",), tries=1,
                                 wait=min(1.0, max(0.05, deadline - time.monotonic())), **fields)
            if reply is not None and reply[0] in kinds:
                return reply
        return None

    def show_display(self) -> None:
        """Put :attr:`display_lines` on the board's LCD, its custom characters first."""
        for code, rows in enumerate(self.display_glyphs):
            self.tell("glyph", code=code, rows=[str(r) for r in rows])
        self.tell("text", lines=[hex_text(line) for line in self.display_lines])

    def tell(self, name: str, **fields: Any) -> None:
        """Send without waiting for an answer (display, light)."""
        self._next_id += 1
        self._send(message(name, **{number_field(name): self._next_id, **fields}))

    def _send(self, frame: bytes) -> bool:
        with self._write_lock:
            port = self._port
            if port is None:
                return False
            try:
                port.write(frame)
                return True
            except (serial.SerialException, OSError) as e:
                log.warning("write to the board failed: %s", e)
                return False

    # -- the reader thread ------------------------------------------------------
    def pause(self) -> None:
        """Let go of the port (for ``nspvend board update``, which writes the board's firmware
        through it): closed at once, and not opened again until :meth:`resume`."""
        self._paused.set()
        self._hold.wait(5)  # the reader thread has let go of it
        self._close_port()
        self.online, self.boot, self.firmware, self.protocol_problem = False, None, None, None
        self._connected.clear()
        self._set_online_event(False, "paused for a firmware update")

    def resume(self, wait: float = 20.0) -> bool:
        """Open the port again and wait up to ``wait`` seconds for the board's hello: whether
        it answered."""
        self._paused.clear()
        return self._connected.wait(wait)

    def _run(self) -> None:
        framer = Framer()
        while not self._closed.is_set():
            if self._paused.is_set():
                self._close_port()
                self._hold.set()
                self._closed.wait(0.05)
                continue
            self._hold.clear()
            if self._port is None and not self._reopen():
                self._closed.wait(self.timing.reopen)
                continue
            try:
                data = self._port.read(self._port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                self._lost(f"port error: {e}")
                continue
            if data:
                for words in framer.feed(data):
                    self._handle(words)
                self.frames_dropped = framer.dropped
            self._keep_alive()

    def _reopen(self) -> bool:
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.05,
                                         write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError):
            return False
        with self._write_lock:
            self._port = port
        self._last_heard = self._last_ping = time.monotonic()
        log.info("opened %s", self.url)
        self._send(message("hello", id=0))
        return True

    def _close_port(self) -> None:
        with self._write_lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _lost(self, why: str) -> None:
        self._close_port()
        self._set_online(False, why)

    def _keep_alive(self) -> None:
        """Ask the board who it is every ``ping`` seconds; silence for long is offline."""
        now = time.monotonic()
        if now - self._last_ping >= self.timing.ping:
            self._last_ping = now
            self._send(message("hello", id=0))
        if self.online and now - self._last_heard > self.timing.ping * self.timing.missed_pings:
            self._set_online(False, "board stopped answering")

    def _set_online_event(self, online: bool, detail: str) -> None:
        log.info("board %s: %s", "online" if online else "offline", detail)
        self._emit(BoardLink(online=online, detail=detail))

    def _set_online(self, online: bool, detail: str) -> None:
        if online == self.online:
            return
        self.online = online
        if online:
            self._connected.set()
            # whatever the board shows should be what the controller last asked for
            if self.display_lines:
                self.show_display()
            self.tell("light", state=self.led_state)
        log.log(logging.INFO if online else logging.WARNING, "board %s: %s",
                "online" if online else "offline", detail)
        self._emit(BoardLink(online=online, detail=detail))

    def _emit(self, event: HardwareEvent) -> None:
        if self.sink is None:
            self._pending_events.append(event)
        else:
            self.sink(event)

    def _handle(self, words: list[str]) -> None:
        self._last_heard = time.monotonic()
        name, fields = read(words)
        try:
            if name == "board" and words[2:3] != [str(PROTOCOL)]:  # its place in every version
                self._wrong_protocol(words[2] if len(words) > 2 else "none")
                return
            if name is None or fields is None:
                raise ValueError(words[0])
            if self.protocol_problem and name != "board":
                return  # nothing a board of another version says can be understood
            if name == "event":
                self._board_event(int(fields["k"]), fields["boot"], fields["what"], fields["args"])
                return
            if name == "board":
                self._hello(fields)
            ident = int(fields[number_field(name)])
        except (IndexError, ValueError, KeyError):
            log.debug("ignored malformed frame %r", words)
            return
        with self._waiters_lock:
            inbox = self._waiters.get(ident)
        if inbox is not None:
            inbox.put((name, fields))

    def _wrong_protocol(self, theirs: str) -> None:
        """A board speaking another version of the link: refuse it, say so once, use nothing.
        One of an older version is "outdated": its firmware wants updating from this host
        (``nspvend board update``); one of a newer, this host's software does."""
        older = theirs.isascii() and theirs.isdigit() and int(theirs) < PROTOCOL
        if older:
            detail = (f"the board's firmware speaks link protocol {theirs}, older than this "
                      f"host's {PROTOCOL}: run nspvend board update")
        else:
            detail = (f"the board speaks link protocol {theirs[:20]!r}, this host speaks "
                      f"{PROTOCOL}: update this machine's software to the board's version")
        if self.protocol_problem != detail:
            self.protocol_problem = detail
            log.error("%s", detail)
            self.online, self.boot, self.firmware = False, None, None
            self._emit(BoardLink(online=False, detail=detail, outdated=older))

    def _hello(self, fields: dict[str, Any]) -> None:
        self.protocol_problem = None
        hello, problem = read_hello(fields)
        if problem != self._hello_problem:  # said once, and once when it is right again
            self._hello_problem = problem
            if problem:
                log.warning("the board's hello is wrong: %s; not using that value", problem)
            self._emit(BoardFault(problem))
        if hello.get("boot") is None:
            return  # without a boot id nothing it says can be placed
        boot = hello["boot"]
        self.slots = hello.get("slots", self.slots)
        self.door = hello.get("door", self.door)
        self.bin_full = hello.get("bin", self.bin_full)
        self.temperature = hello.get("temp")
        if self.boot is not None and boot != self.boot and self.online:
            self._new_boot(boot)
        self.boot = boot
        self.highest_seq = hello.get("highest", 0)
        self.firmware = fields.get("firmware")
        self._set_online(True, f"board {boot} (firmware {self.firmware}) with {self.slots} slots")

    def _new_boot(self, boot: str) -> None:
        log.warning("the board restarted (boot %s, was %s)", boot, self.boot)
        self.boot = boot
        self._emit(BoardLink(online=True, detail=f"board restarted (boot {boot})"))

    def _board_event(self, k: int, boot: str, name: str, args: list[str]) -> None:
        seen = self._seen.setdefault(boot, set())
        if k in seen:
            self._send(message("ack", k=k))  # our acknowledgement was lost: say it again
            return
        seen.add(k)
        if len(seen) > 512:
            seen.discard(min(seen))
        if len(self._seen) > 4:
            self._seen = {boot: seen}
        value = args[0] if args else ""
        if name == "btn" and not (DIGITS.fullmatch(value) and 1 <= int(value) <= 64):
            log.debug("ignored a button event with no button number: %r", args)
            name = ""
        if name == "boot":
            if self.boot is not None and boot != self.boot:
                self._new_boot(boot)
            self.boot = boot
            self._send(message("hello", id=0))
        elif name == "btn":
            self._emit(ButtonPressed(int(value)))
        elif name == "door":
            self.door = value == "1"
            self._emit(DoorChanged(open=self.door))
        elif name == "bin":
            self.bin_full = value == "1"
            self._emit(SharpsBinChanged(full=self.bin_full))
        # Acknowledge only once the event is in the controller's hands.
        self._send(message("ack", k=k))


def glyphs_known(firmware: str | None) -> bool:
    """Whether a board's firmware takes custom characters (``glyph``: firmware 3 on)."""
    return bool(firmware) and firmware.isdigit() and int(firmware) >= 3


MAX_SEQ = 2**53  # vend numbers are JSON-safe integers; SQLite holds them too
BOOT_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")
DIGITS = re.compile(r"[0-9]{1,20}")


def read_hello(fields: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The values of a hello's answer (``board``: boot, slots, door, bin, temp, highest) that
    make sense, and what was wrong with the rest (None if nothing). A board is trusted with
    a motor, not with the host's memory: each value is checked for range before use."""
    hello: dict[str, Any] = {}
    problems: list[str] = []
    boot = fields.get("boot")
    if boot is not None and BOOT_ID.fullmatch(boot):
        hello["boot"] = boot
    else:
        problems.append(f"boot id {boot!r}")
    slots = fields.get("slots")
    if slots is not None and DIGITS.fullmatch(slots) and int(slots) <= 64:
        hello["slots"] = int(slots)
    else:
        problems.append(f"slot count {slots!r}")
    for name in ("door", "bin"):
        if fields.get(name) in ("0", "1"):
            hello[name] = fields[name] == "1"
        else:
            problems.append(f"{name} {fields.get(name)!r}")
    temp = fields.get("temp")
    try:
        value = None if temp in (None, "-") else float(temp)
    except ValueError:
        value = math.nan
    if value is None or (math.isfinite(value) and -50 <= value <= 150):
        hello["temp"] = value
    else:
        problems.append(f"temperature {temp!r}")
        hello["temp"] = None
    highest = fields.get("highest")
    if highest is None or (DIGITS.fullmatch(highest) and int(highest) < MAX_SEQ):
        hello["highest"] = int(highest) if highest else 0
    else:
        problems.append(f"highest vend number {highest[:20]!r}")
    return hello, "; ".join(problems) or None


class SerialDispenser:
    """Vends through the board: acknowledged at once, completed when the turn is done."""

    def __init__(self, link: BoardConnection) -> None:
        self.link = link

    def boot_id(self) -> str | None:
        return self.link.boot

    def highest_seq(self) -> int:
        """The highest vend number the board has seen in this boot (0 if none)."""
        return self.link.highest_seq

    def vend(self, slot: int, seq: int) -> VendOutcome:
        link = self.link
        if link.protocol_problem:
            return VendOutcome.UNKNOWN  # a board we cannot understand is not asked to turn
        # addressed to this boot of the board: resent after a board restart it is refused
        # ("unknown"), never turned a second time by a board that forgot the first
        answers = ("accepted", "done", "busy", "refused", "unknown")
        reply = link.request("vend", expect=answers, seq=seq, slot=slot, boot=link.boot)
        busy_until = time.monotonic() + link.timing.vend
        while reply is not None and reply[0] == "busy" and time.monotonic() < busy_until:
            time.sleep(0.1)  # a vend from before a host restart is still running
            reply = link.request("vend", expect=answers, seq=seq, slot=slot, boot=link.boot)
        if reply is None or reply[0] in ("busy", "unknown"):
            return VendOutcome.UNKNOWN
        if reply[0] == "refused":  # debug only (a press's time); the slot is reported as faulty
            log.debug("the board refused to turn slot %d: %s", slot, reply[1]["why"])
            return VendOutcome.MOTOR_STALLED
        if reply[0] == "accepted":
            reply = link.wait_for(("done",), link.timing.vend, "recall", seq=seq)
            if reply is None:
                return VendOutcome.UNKNOWN
        return OUTCOMES.get(reply[1]["outcome"], VendOutcome.UNKNOWN)

    def recall(self, seq: int, boot_id: str | None) -> VendOutcome | None:
        link = self.link
        if link.protocol_problem:
            return VendOutcome.UNKNOWN
        reply = link.request("recall", expect=("done", "unknown", "accepted"), seq=seq)
        if reply is not None and reply[0] == "accepted":
            reply = link.wait_for(("done",), link.timing.vend, "recall", seq=seq)
        if reply is None:
            return VendOutcome.UNKNOWN
        name, fields = reply
        if name == "done":
            return OUTCOMES.get(fields["outcome"], VendOutcome.UNKNOWN)
        board, oldest = fields["boot"], int(fields["oldest"])
        if boot_id is not None and board == boot_id and (oldest == 0 or seq >= oldest):
            return VendOutcome.NOT_RUN
        return None


class BoardDisplay(PagedDisplay):
    """The board's own 20x4 character LCD (firmware_py/lcd.py), fed each page's lines."""

    COLS, ROWS = 20, 4

    def __init__(self, link: BoardConnection) -> None:
        super().__init__()
        self.link = link
        self.lines: list[str] = []

    def layout(self, screen: Screen) -> list[list[str]]:
        return render_pages(screen, self.COLS, self.ROWS)

    def put(self, lines: list[str]) -> None:
        self.lines = lines
        if glyphs_known(self.link.firmware):
            coded, patterns = custom(lines)
        else:  # an older board's firmware has no custom characters: letters folded
            coded, patterns = [fold(line) for line in lines], []
        self.link.display_glyphs = patterns
        self.link.display_lines = coded
        self.link.show_display()


class BoardLed:
    def __init__(self, link: BoardConnection) -> None:
        self.link = link

    def set(self, state: str) -> None:
        self.link.led_state = state
        self.link.tell("light", state=state)


class SerialHardware:
    """A machine wired to a dispenser board."""

    def __init__(self, link: BoardConnection) -> None:
        self.link = link
        self.dispenser = SerialDispenser(link)
        self.display = BoardDisplay(link)
        self.led = BoardLed(link)

    def start(self, sink: EventSink) -> None:
        self.link.start_events(sink)

    def door_open(self) -> bool:
        return self.link.door

    def sharps_bin_full(self) -> bool:
        return self.link.bin_full

    def temperature_c(self) -> float | None:
        return self.link.temperature

    def board_firmware(self) -> str | None:
        """The firmware version the board's last hello said (None: none heard yet)."""
        return self.link.firmware

    def board_port(self) -> str:
        """The serial port the board is on (for ``nspvend board update``)."""
        return self.link.url

    def release_board(self) -> None:
        """Let go of the board's port (see :meth:`BoardConnection.pause`)."""
        self.link.pause()

    def resume_board(self, wait: float = 20.0) -> bool:
        return self.link.resume(wait)

    def close(self) -> None:
        self.link.close()


def open_hardware(settings: SerialSettings, timing: LinkTiming | None = None) -> SerialHardware:
    """Open the board at ``settings.port`` and wait briefly for it to answer."""
    link = BoardConnection(settings.port, settings.baud, timing)
    link.open()
    return SerialHardware(link)

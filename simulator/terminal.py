"""The demo: the real daemon on the simulator, with a terminal front end.

Digits press product buttons; letters inject faults, open the door or refill.
On a terminal the screen is redrawn in place; with input from a pipe each line
is a key sequence and display changes are printed as lines (for scripts and tests).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.resources
import os
import queue
import select
import sys
import tempfile
import termios
import textwrap
import threading
import time
import tty
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from controller import logs
from controller.config import load_config
from controller.daemon import Daemon, install_signal_handlers
from simulator import backend, gpio_world
from simulator.model import PhysicalMachine

KEYS = """\
keys: 1-6 press a product button   7 language   8 say it again   d door open/shut   b sharps bin
      j<N> jam slot N   e<N> empty slot N   m<N> kill slot N's motor   s stuck drop sensor
      c clear physical faults   f<N> staff clear slot N's fault   r staff refill all
      x<N> slot N's packs are past their date (staff record it)   q quit"""


# The demo machine on the gpio backend: 23 inputs and outputs take most of the header
# (SPI and the UART pins are given up; GPIO 2 keeps its I2C pull-up, fine for an LED).
DEMO_GPIO = """
[gpio]
pin_factory = "mock"    # gpiozero's mock pins, driven by the simulator's physical model
motors = [5, 6, 13, 19, 26, 21, 20]
home_switches = [12, 16, 17, 27, 22, 23, 24]
buttons = [4, 25, 18, 10, 9, 11, 3, 7]  # 7: language, 8: say it again
drop_sensor = 14
door = 15
led = 2
motor_timeout_ms = 3000
drop_wait_ms = 400
"""


def add_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    """``nspvend demo`` (an entry point of ``nspvend.commands``)."""
    demo = add("demo", _demo, "run the daemon on the simulator with a terminal front end")
    demo.add_argument("--data", help="keep the demo's database here (default: a temporary folder)")
    demo.add_argument("--fast", action="store_true", help="no motor delays")
    demo.add_argument("--gpio", action="store_true", help=(
        "wire the simulator through gpiozero's mock pins (the gpio backend) instead of the "
        "sim backend"))


def _demo(args: argparse.Namespace) -> int:
    logs.setup("WARNING")
    return run_demo(data_dir=args.data, fast=args.fast, gpio=args.gpio)


def run_demo(data_dir: str | None = None, fast: bool = False,
             stdin: TextIO | None = None, stdout: TextIO | None = None, gpio: bool = False) -> int:
    """Run the demo until ``q`` or end of input; returns the daemon's exit code."""
    folder = Path(data_dir or tempfile.mkdtemp(prefix="nspvend-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "nspvend.toml"
    if not config_path.exists():
        text = importlib.resources.files("simulator").joinpath("demo.toml").read_text()
        if gpio:
            text = text.replace('hal = "sim"', 'hal = "gpio"').replace("\n[database]",
                                                                   DEMO_GPIO + "\n[database]")
        config_path.write_text(text)
    configured = load_config(config_path)
    # the demo's screen is the terminal: what a configured LCD or screen would show is drawn
    # there (FrontEnd), no real display is opened
    config = dataclasses.replace(configured, display=dataclasses.replace(configured.display,
                                                                         kind="auto"))
    model = PhysicalMachine(max(s.slot for s in config.slots),
                            turn_s=0.0 if fast else 1.2, drop_s=0.0 if fast else 0.3)
    sleep = None if fast else time.sleep
    if config.backend == "gpio-mock":
        hardware: Any = gpio_world.open_hardware(config.hardware_settings, model, sleep)
    else:
        hardware = backend.open_hardware(config.sim, model, sleep)
    daemon = Daemon(config, hardware=hardware)
    install_signal_handlers(daemon)
    front = FrontEnd(daemon, model, stdin or sys.stdin, stdout or sys.stdout, folder)
    front.configured_display = configured.display
    threading.Thread(target=front.run, name="front-end", daemon=True).start()
    return daemon.run()


class FrontEnd:
    """Reads keys, acts on the simulated world, and shows the machine."""

    def __init__(self, daemon: Daemon, model: PhysicalMachine, stdin: TextIO, stdout: TextIO,
                 folder: Path) -> None:
        self.daemon, self.model = daemon, model
        self.hw = daemon.hardware
        self.stdin, self.stdout, self.folder = stdin, stdout, folder
        self.interactive = stdin.isatty() and stdout.isatty()
        self.pending: str | None = None
        self.configured_display: Any = None
        self.note = ""
        self._last_frame = ""
        self._cache: dict[str, dict] = {}

    def run(self) -> None:
        try:
            self.daemon.ready.wait()
            self._first_fill()
            if self.interactive:
                self._run_terminal()
            else:
                self._run_lines()
        finally:
            self.daemon.stop()

    def _first_fill(self) -> None:
        """A new demo machine is full; a kept one is as the controller last knew it."""
        stock = self.daemon.ask({"id": "demo-stock", "cmd": "stock"})["result"]
        if all(s["count"] == 0 for s in stock["slots"]):
            stock = {"slots": self.daemon.ask(
                {"id": f"demo-fill-{time.time_ns()}", "cmd": "refill", "all": True}
            )["result"]["slots"]}
        for s in stock["slots"]:
            self.model.load(s["slot"], s["count"])

    # -- input ---------------------------------------------------------------
    def key(self, ch: str) -> bool:
        """Act on one key; False means quit."""
        if self.pending:
            kind, self.pending = self.pending, None
            if ch.isdigit():
                self._slot_action(kind, int(ch))
            return True
        if ch == "q":
            return False
        if ch.isdigit() and ch != "0":
            self.hw.press(int(ch))
        elif ch in "jemfx":
            self.pending = ch
        elif ch == "d":
            self.model.set_door(not self.model.door_open)
        elif ch == "b":
            self.model.set_sharps_bin_full(not self.model.sharps_bin_full)
        elif ch == "s":
            self.model.inject("sensor_stuck")
            self.note = "drop sensor stuck"
        elif ch == "c":
            self.model.inject("clear")
            self.note = "physical faults cleared (staff still clear slot faults with f<N>)"
        elif ch == "r":
            answer = self.daemon.ask({"id": f"demo-{time.time_ns()}", "cmd": "refill",
                                      "all": True})
            for s in answer["result"]["slots"]:
                self.model.load(s["slot"], s["count"])
            self.note = "staff refilled every slot"
        return True

    def _slot_action(self, kind: str, slot: int) -> None:
        try:
            if kind == "f":
                answer = self.daemon.ask({"id": f"demo-{time.time_ns()}", "cmd": "clear_fault",
                                          "slot": slot})
                self.note = (f"slot {slot} fault cleared" if answer["ok"]
                             else f"refused: {answer['error']}")
                return
            if kind == "x":
                self._expire(slot)
                return
            self.model.inject({"j": "jam", "e": "empty", "m": "motor_dead"}[kind], slot)
            self.note = f"slot {slot}: {({'j': 'jammed', 'e': 'emptied', 'm': 'motor dead'})[kind]}"
        except ValueError as e:
            self.note = str(e)

    def _expire(self, slot: int) -> None:
        """Staff record that slot ``slot``'s packs expired at the end of last month: the
        machine gives them only when no slot in date has the product."""
        stock = self.daemon.ask({"id": f"demo-{time.time_ns()}", "cmd": "stock"})
        found = [s for s in stock.get("result", {}).get("slots", []) if s["slot"] == slot]
        if not found:
            self.note = f"there is no slot {slot}"
            return
        today = self.daemon.clock.now().astimezone(self.daemon.config.tz).date()
        last = today.replace(day=1) - timedelta(days=1)
        answer = self.daemon.ask({"id": f"demo-{time.time_ns()}", "cmd": "refill", "slot": slot,
                                  "count": found[0]["count"], "expiry": f"{last:%Y-%m}"})
        self.note = (f"slot {slot}: its packs expired at the end of {last:%b %Y}" if answer["ok"]
                     else f"refused: {answer['error']}")

    def _run_lines(self) -> None:
        self._print_display_changes()
        for line in self.stdin:
            for ch in line.strip():
                if not self.key(ch):
                    return
                self._settle()
                self._print_display_changes()
        self._settle()
        self._print_display_changes()

    def _settle(self) -> None:
        """Wait until the core loop has dealt with everything sent so far."""
        self.daemon.ask({"id": "demo-sync", "cmd": "stock"})

    def shown(self) -> list[str]:
        """The screen as the configured display shows it: fitted lines on a character LCD,
        the paragraphs elsewhere."""
        screen = getattr(self.hw.display, "screen", None)
        display = self.configured_display
        if screen is not None and display is not None and display.kind == "hd44780":
            from hal.hd44780 import render_pages
            from hal.screens import visible

            pages = render_pages(screen, display.cols, display.rows)
            page = pages[getattr(self.hw.display, "page", 0) % len(pages)]
            return [visible(line) for line in page]
        return list(self.hw.display.lines)

    def _print_display_changes(self) -> None:
        frame = "\n".join(f"display | {line}" for line in self.shown())
        if frame != self._last_frame:
            self._last_frame = frame
            print(frame, file=self.stdout, flush=True)

    def _run_terminal(self) -> None:
        fd = self.stdin.fileno()
        with _cbreak(fd):
            self.stdout.write("\x1b[?25l")
            try:
                while True:
                    self._draw()
                    ready, _, _ = select.select([fd], [], [], 0.25)
                    if ready:
                        ch = os.read(fd, 1).decode(errors="ignore")
                        if not ch or not self.key(ch):
                            return
            finally:
                self.stdout.write("\x1b[?25h\n")
                self.stdout.flush()

    # -- output --------------------------------------------------------------
    def frame(self) -> str:
        """The whole screen as text."""
        stock = self._latest("status", {"id": "demo-status", "cmd": "status"})
        events = self._latest("events", {"id": "demo-events", "cmd": "events", "limit": 6})
        truth = self.model.snapshot()
        width = 62
        out = [f" nspvend demo - machine {self.daemon.config.machine_id}"
               f" - data in {self.folder}", ""]
        out.append(" +" + "-" * width + "+")
        for line in self.shown() or [""]:
            for part in textwrap.wrap(line, width - 2) or [""]:
                out.append(f" | {part:<{width - 2}} |")
        out.append(" +" + "-" * width + "+")
        state = stock["state"]
        out.append(f" light: {self.hw.led.state:<6} mode: {state['mode']:<15} door: "
                   f"{state['door']:<7} sharps bin: {state['sharps_bin']}")
        out.append(f" faults: {', '.join(state['faults']) or 'none'}"
                   + ("   DROP SENSOR STUCK" if truth["sensor_stuck"] else ""))
        out.append("")
        out.append(" buttons: " + "  ".join(f"[{p.button}] {p.name}"
                                             for p in self.daemon.config.products[:3]))
        out.append("          " + "  ".join(f"[{p.button}] {p.name}"
                                             for p in self.daemon.config.products[3:]))
        out.append("")
        out.append(" slot product        counted  really in  dropped  use by   status")
        physical = {s["slot"]: s for s in truth["slots"]}
        for s in stock["stock"]["slots"]:
            p = physical.get(s["slot"], {})
            mark = " JAMMED" if p.get("jammed") else (" MOTOR DEAD" if p.get("motor_dead") else "")
            out.append(f" {s['slot']:>4} {s['product']:<14} {s['count']:>3}/{s['capacity']:<4}"
                       f" {p.get('packs_left', '?'):>9} {p.get('packs_dropped', '?'):>8}  "
                       f"{s.get('expires') or '-':<7}  {s['status']}{mark}")
        out.append("")
        out.append(" recent events:")
        for e in events["events"]:
            slot = f" slot {e['slot']}" if "slot" in e else ""
            out.append(f"   {e['ts'][11:19]} {e['type']}{slot} {e.get('detail', '')}")
        out.append("")
        speaker = self.daemon.speaker
        if speaker is not None and speaker.last:
            out.append(f" voice ({self.daemon.machine.language.name}): {speaker.last}")
        out.append(f" {self.note}")
        out.append(KEYS)
        return "\n".join(out)

    def _latest(self, name: str, request: dict) -> dict:
        """The answer to ``request``, or the last one while the core loop is busy vending."""
        try:
            wait = 0.2 if name in self._cache else 30
            self._cache[name] = self.daemon.ask(request, timeout=wait)["result"]
        except queue.Empty:
            pass
        return self._cache[name]

    def _draw(self) -> None:
        frame = self.frame()
        if frame != self._last_frame:
            self._last_frame = frame
            self.stdout.write("\x1b[H\x1b[2J" + frame.replace("\n", "\r\n"))
            self.stdout.flush()


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

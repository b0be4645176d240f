"""The daemon: one core loop feeding events, commands and ticks to the vending machine.

Hardware callbacks, the control socket and signals only put things on one
queue; the core loop takes them one at a time, so the machine's state is only
ever touched from one thread.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import hal
from controller.clock import Clock, SystemClock
from controller.commands import Command, run_command
from controller.config import Config
from controller.control import ControlServer
from controller.hublink import HubEvent, HubLink
from controller.ledger import open_ledger
from controller.messages import refusal
from controller.sdnotify import Notifier
from controller.vending import Tick, VendingMachine
from hal.displays import open_display
from hal.speech import Speaker

log = logging.getLogger(__name__)

TICK_S = 1.0


class _Stop:
    """Put on the queue to end the core loop."""


STOP = _Stop()


class Daemon:
    """Everything one running machine needs, wired together.

    Parameters: the validated ``config``; ``hardware`` already opened (the demo opens
    its simulated machine itself), or None to open the backend the config names; a
    ``clock``.
    """

    def __init__(
        self,
        config: Config,
        hardware: hal.Hardware | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        # a database that cannot be used is moved aside and replaced: the machine vends
        self.ledger, self.replaced = open_ledger(config.database_path, config.machine_id,
                                                 self.clock.now())
        self.hardware = hardware or hal.open_hardware(config.backend, config.hardware_settings)
        self.hardware.display = open_display(config.display, self.hardware.display)
        self.speaker = Speaker(config.speech) if config.speech.enabled else None
        self.machine = VendingMachine(config, self.ledger, self.hardware, self.clock,
                                      on_change=self._changed, speaker=self.speaker)
        self.control: ControlServer | None = None
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.listeners: list[Callable[[str], None]] = []
        self.notifier = Notifier()
        self.hub = None
        if config.mqtt is not None:
            self.hub = HubLink(config, self.machine, self.post)
            self.listeners.append(self.hub.changed)

    def post(self, event: Any) -> None:
        """Queue an event for the core loop (safe from any thread and from signal handlers).
        A press is stamped with when it came, so one that waited too long is let go."""
        if isinstance(event, hal.ButtonPressed) and event.at is None:
            event = replace(event, at=self.clock.monotonic())
        self.events.put(event)

    def stop(self) -> None:
        """End gracefully: the vend in progress finishes and counts; presses still queued
        are not served (nobody waits for them while the machine stops); commands already
        accepted still run."""
        self.stopping.set()
        self.post(STOP)

    def ask(self, request: dict, timeout: float = 30) -> dict:
        """Run a command in the core loop from another thread and wait for its answer."""
        answers: queue.SimpleQueue = queue.SimpleQueue()
        self.post(Command(request, answers.put, origin="local"))
        return answers.get(timeout=timeout)

    def _changed(self, kind: str) -> None:
        for listener in self.listeners:
            listener(kind)

    def run(self) -> int:
        """Start everything, serve until stopped, shut down cleanly. Returns the exit code."""
        self.machine.start()
        if self.replaced:
            log.error("%s", self.replaced)
            self.machine.database_replaced(self.replaced)
        self.hardware.start(self.post)
        if self.hub:
            self.hub.start()
        self.control = ControlServer(self.config.control_socket, self.post,
                                     self.config.control_group)
        self.control.start()
        log.info("nspvend ready: machine %s, hal %s, control socket %s",
                 self.config.machine_id, self.config.hal, self.config.control_socket)
        self.ready.set()
        self.notifier.ready(f"serving: machine {self.config.machine_id}, hal {self.config.hal}")
        try:
            self._loop()
        finally:
            self.notifier.stopping()
            self._shutdown()
            self.notifier.close()
        return 0

    def _loop(self) -> None:
        next_tick = self.clock.monotonic() + TICK_S
        while True:
            self.notifier.alive()  # only this loop pings: a hung loop stops the pings
            wait = max(0.0, next_tick - self.clock.monotonic())
            if self.notifier.watchdog_interval_s is not None:
                wait = min(wait, self.notifier.watchdog_interval_s)
            try:
                event = self.events.get(timeout=wait)
            except queue.Empty:
                event = None
            if event is STOP:
                return
            if event is not None:
                self._handle(event)
            if self.clock.monotonic() >= next_tick:
                self._handle(Tick())
                next_tick = self.clock.monotonic() + TICK_S

    def _handle(self, event: Any) -> None:
        if self.stopping.is_set() and isinstance(event, hal.ButtonPressed):
            return
        try:
            if self.hub and isinstance(event, HubEvent):
                self.hub.handle(event)
                return
            if isinstance(event, Command):
                answer = run_command(self.machine, event.request, event.origin)
                if event.reply:
                    event.reply(answer)
                return
            self.machine.handle(event)
            if self.hub and isinstance(event, Tick):
                self.hub.tick()
        except Exception:
            # One bad event must not take the machine away from its clients.
            log.exception("error while handling %r; carrying on", event)
            if isinstance(event, Command) and event.reply:
                event.reply(refusal(None, "daemon: internal error, see log"))

    def _shutdown(self) -> None:
        log.info("stopping")
        if self.control:
            self.control.close()
        try:
            self.machine.stop()
            unsaved = list(self.machine.unsaved_usage.values())
            sent = self.hub.stop(unsaved) if self.hub else 0
            lost = self.machine.unsaved_summary()
            if lost:  # never silently: one line, with the counts
                if not unsaved:
                    where = "no usage waits to be sent"
                elif self.hub is None:
                    where = "not sent: no [mqtt] hub configured"
                else:
                    where = f"{sent} of {len(unsaved)} buckets sent straight to the hub"
                log.critical("stopping with the card failing: %s; %s", lost, where)
        finally:
            self.hardware.close()
            if self.speaker is not None:
                self.speaker.close()
            self.ledger.close()
        log.info("stopped")


def install_signal_handlers(daemon: Daemon) -> None:
    """SIGTERM and SIGINT end the core loop gracefully."""

    def on_signal(signum: int, frame: Any) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

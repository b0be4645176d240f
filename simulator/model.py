"""The physical machine: what is really in each slot and what really dropped.

Everything that stands in for hardware (the in-process ``sim`` backend, the board
simulator behind a pty, gpiozero's mock pins) is a view of one
:class:`PhysicalMachine`, so tests can compare the controller's beliefs with
the truth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

FAULT_KINDS = ("jam", "empty", "sensor_stuck", "motor_dead", "board_silent", "clear")


class PowerCut(Exception):
    """Raised out of a turn when a power cut was injected: everything stops at once."""


@dataclass
class SlotTruth:
    """One spiral as it physically is."""

    packs: int = 0
    dropped: int = 0
    turns: int = 0
    jammed: bool = False
    motor_dead: bool = False


@dataclass(frozen=True)
class Turn:
    """What one motor turn physically did."""

    home_reached: bool
    dropped: bool
    beam_seen: bool


class PhysicalMachine:
    """The truth of one machine, with fault injection.

    Parameters: ``slots`` is the number of spirals; ``turn_s`` and ``drop_s`` are
    how long a spiral takes to turn and a pack to fall (only waited for when a
    ``sleep`` is given to :meth:`turn`).
    """

    def __init__(self, slots: int, turn_s: float = 1.2, drop_s: float = 0.25) -> None:
        if slots < 1:
            raise ValueError("a machine has at least one slot")
        self.turn_s = turn_s
        self.drop_s = drop_s
        self.slots = {n: SlotTruth() for n in range(1, slots + 1)}
        self.door_open = False
        self.sharps_bin_full = False
        self.temperature_c: float | None = 14.0
        self._sensor_stuck = False
        self.board_silent = False
        self.power_cut_pending: str | None = None
        self.motor_running: int | None = None
        self.lock = threading.RLock()
        self._listeners: list[Callable[[str, dict], None]] = []

    # -- observers -----------------------------------------------------------
    def subscribe(self, listener: Callable[[str, dict], None]) -> None:
        """Call ``listener(kind, detail)`` on every physical change (door, bin, drop)."""
        self._listeners.append(listener)

    def _notify(self, kind: str, **detail: object) -> None:
        for listener in list(self._listeners):
            listener(kind, detail)

    @property
    def sensor_stuck(self) -> bool:
        """The drop beam reads "broken" whatever falls (dirt, a wedged pack, a dead sensor)."""
        return self._sensor_stuck

    @sensor_stuck.setter
    def sensor_stuck(self, stuck: bool) -> None:
        changed = self._sensor_stuck != stuck
        self._sensor_stuck = stuck
        if changed:
            self._notify("sensor", stuck=stuck)

    # -- staff and the world -------------------------------------------------
    def load(self, slot: int, count: int) -> None:
        """Staff put ``count`` packs in ``slot`` (the new physical total)."""
        with self.lock:
            self._slot(slot).packs = max(0, count)

    def set_door(self, is_open: bool) -> None:
        with self.lock:
            changed = self.door_open != is_open
            self.door_open = is_open
        if changed:
            self._notify("door", open=is_open)

    def set_sharps_bin_full(self, full: bool) -> None:
        with self.lock:
            changed = self.sharps_bin_full != full
            self.sharps_bin_full = full
        if changed:
            self._notify("sharps_bin", full=full)

    def inject(self, kind: str, slot: int | None = None) -> None:
        """Inject a fault: ``jam``, ``empty``, ``motor_dead`` (per slot), ``sensor_stuck``
        (drop beam), ``board_silent`` (no answers), or ``clear`` (a slot's faults, or all)."""
        with self.lock:
            if kind == "jam":
                self._slot(slot).jammed = True
            elif kind == "empty":
                self._slot(slot).packs = 0
            elif kind == "motor_dead":
                self._slot(slot).motor_dead = True
            elif kind == "sensor_stuck":
                self.sensor_stuck = True
            elif kind == "board_silent":
                self._set_board_silent(True)
            elif kind == "clear":
                targets = [self._slot(slot)] if slot is not None else list(self.slots.values())
                for truth in targets:
                    truth.jammed = truth.motor_dead = False
                if slot is None:
                    self.sensor_stuck = False
                    self._set_board_silent(False)
            else:
                raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")

    def _set_board_silent(self, silent: bool) -> None:
        if self.board_silent != silent:
            self.board_silent = silent
            self._notify("board", online=not silent)

    def cut_power_during_next_turn(self, phase: str = "before_drop") -> None:
        """The next turn stops dead: ``before_motor``, ``before_drop`` or ``after_drop``."""
        if phase not in ("before_motor", "before_drop", "after_drop"):
            raise ValueError(f"unknown power-cut phase {phase!r}")
        self.power_cut_pending = phase

    # -- the mechanism -------------------------------------------------------
    def plan_turn(self, slot: int) -> tuple[bool, bool]:
        """A motor starts on ``slot``: will the spiral come home, and will a pack fall?"""
        truth = self._slot(slot)
        with self.lock:
            truth.turns += 1
            if truth.motor_dead:
                return False, False
            return True, not truth.jammed and truth.packs > 0

    def drop(self, slot: int) -> None:
        """A pack really falls out of ``slot``."""
        truth = self._slot(slot)
        with self.lock:
            if truth.packs <= 0:
                return
            truth.packs -= 1
            truth.dropped += 1
        self._notify("drop", slot=slot)

    def turn(self, slot: int, sleep: Callable[[float], None] | None = None) -> Turn:
        """Run ``slot``'s motor for one whole spiral turn and report what happened."""
        cut = self.power_cut_pending
        if cut == "before_motor":
            self.power_cut_pending = None
            raise PowerCut(f"power cut before slot {slot} turned")
        self.motor_running = slot
        self._notify("motor", slot=slot, on=True)
        try:
            home_reached, will_drop = self.plan_turn(slot)
            if sleep:
                sleep(self.turn_s)
            if cut == "before_drop" and home_reached:
                self.power_cut_pending = None
                raise PowerCut(f"power cut while slot {slot} turned")
            if will_drop:
                self.drop(slot)
                if sleep:
                    sleep(self.drop_s)
            if cut == "after_drop":
                self.power_cut_pending = None
                raise PowerCut(f"power cut after slot {slot} turned")
            return Turn(home_reached=home_reached, dropped=will_drop,
                        beam_seen=will_drop or self.sensor_stuck)
        finally:
            self.motor_running = None
            self._notify("motor", slot=slot, on=False)

    # -- the truth -----------------------------------------------------------
    def packs_left(self) -> dict[int, int]:
        with self.lock:
            return {n: t.packs for n, t in self.slots.items()}

    def packs_dropped(self) -> dict[int, int]:
        with self.lock:
            return {n: t.dropped for n, t in self.slots.items()}

    def snapshot(self) -> dict:
        """The whole truth as plain data (the simulator's ``state`` answer)."""
        with self.lock:
            return {
                "slots": [
                    {
                        "slot": n,
                        "packs_left": t.packs,
                        "packs_dropped": t.dropped,
                        "turns": t.turns,
                        "jammed": t.jammed,
                        "motor_dead": t.motor_dead,
                    }
                    for n, t in self.slots.items()
                ],
                "door_open": self.door_open,
                "sharps_bin_full": self.sharps_bin_full,
                "temperature_c": self.temperature_c,
                "sensor_stuck": self.sensor_stuck,
                "board_silent": self.board_silent,
                "motor_running": self.motor_running,
            }

    def _slot(self, slot: int | None) -> SlotTruth:
        if slot not in self.slots:
            raise ValueError(f"no slot {slot}; this machine has slots 1..{len(self.slots)}")
        return self.slots[slot]

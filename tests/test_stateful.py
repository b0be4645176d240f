"""Random days in the life of a machine, checked against the simulator's physical truth.

Presses, refills, jams, dead motors, a stuck drop sensor, door openings,
disables, graceful restarts, crashes and power cuts mid-vend, in any order.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hal import ButtonPressed
from simulator.model import PowerCut
from tests.conftest import Rig, examples, make_config

SLOTS = st.integers(min_value=1, max_value=4)
BUTTONS = st.integers(min_value=1, max_value=3)
PRODUCT_OF_BUTTON = {1: "syringe-1ml", 2: "foil", 3: "naloxone"}


class MachineLife(RuleBasedStateMachine):
    backend = "sim"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.rig = Rig(make_config(Path(self.tmp.name), self.backend, vend={"retries": 1}))
        self.rig.fill_all()
        self.power_cuts = 0
        self.sensor_was_stuck = False
        self.blind_vends = 0  # presses while the drop sensor was stuck: outcomes unknown
        # slots whose count may be below the truth: a power cut left an unknown outcome
        self.uncertain: set[int] = set()
        self.known_empty_turns: dict[int, int] = {}  # slot -> its motor turns when found empty

    def teardown(self) -> None:
        self.rig.ledger.close()
        self.tmp.cleanup()

    # -- what happens ------------------------------------------------------------------
    @rule(button=BUTTONS)
    def press(self, button: int) -> None:
        vm, model = self.rig.vm, self.rig.model
        product = PRODUCT_OF_BUTTON[button]
        # With a blind drop sensor a jam cannot be told from a drop, so only then may a
        # healthy slot elsewhere go untried.
        servable = vm.mode == "in_service" and not model.sensor_stuck and any(
            s.product == product and s.enabled and not s.fault
            and model.slots[s.slot].packs > 0
            and not model.slots[s.slot].jammed and not model.slots[s.slot].motor_dead
            for s in vm.slots.values()
        )
        before = sum(model.packs_dropped().values())
        if model.sensor_stuck:
            self.blind_vends += 1
            self.uncertain.update(s.slot for s in vm.slots.values() if s.product == product)
        self.rig.press(button)
        dropped = sum(model.packs_dropped().values()) - before
        assert dropped <= 1, "one press, one pack"
        if servable:
            assert dropped == 1, "a healthy slot with the product was there: the client must be served"

    @rule(button=BUTTONS, times=st.integers(min_value=2, max_value=6))
    def press_again_and_again(self, button: int, times: int) -> None:
        for _ in range(times):
            self.press(button)

    @rule(button=BUTTONS)
    def press_nobody_waits_for_any_more(self, button: int) -> None:
        turns = sum(t.turns for t in self.rig.model.slots.values())
        stale = self.rig.clock.monotonic() - self.rig.config.press_max_wait_s - 1
        self.rig.vm.handle(ButtonPressed(button, at=stale))
        assert sum(t.turns for t in self.rig.model.slots.values()) == turns

    @rule(slot=SLOTS, count=st.integers(min_value=0, max_value=5))
    def refill(self, slot: int, count: int) -> None:
        self.rig.refill(slot, count)
        self.uncertain.discard(slot)

    @rule(slot=SLOTS, kind=st.sampled_from(["jam", "motor_dead"]))
    def break_slot(self, slot: int, kind: str) -> None:
        self.rig.model.inject(kind, slot)

    @rule(slot=SLOTS)
    def staff_fix_slot(self, slot: int) -> None:
        self.rig.model.inject("clear", slot)
        assert self.rig.command(cmd="clear_fault", slot=slot)["ok"]

    @rule()
    def stick_drop_sensor(self) -> None:
        self.rig.model.inject("sensor_stuck")
        self.sensor_was_stuck = True

    @rule()
    def unstick_drop_sensor(self) -> None:
        self.rig.model.sensor_stuck = False

    @rule(is_open=st.booleans())
    def door(self, is_open: bool) -> None:
        self.rig.model.set_door(is_open)

    @rule(slot=SLOTS, enabled=st.booleans())
    def enable_or_disable(self, slot: int, enabled: bool) -> None:
        assert self.rig.command(cmd="enable" if enabled else "disable", slot=slot)["ok"]

    @rule(minutes=st.integers(min_value=1, max_value=200))
    def time_passes(self, minutes: int) -> None:
        self.rig.tick(minutes * 60)

    @rule()
    def graceful_restart(self) -> None:
        self.rig.restart()

    @rule()
    def crash_and_restart(self) -> None:
        self.rig.crash_restart()

    @rule(button=BUTTONS, phase=st.sampled_from(["before_motor", "before_drop", "after_drop"]))
    def power_cut_during_a_vend(self, button: int, phase: str) -> None:
        self.rig.model.cut_power_during_next_turn(phase)
        try:
            self.rig.press(button)
        except PowerCut:
            self.power_cuts += 1
            self.uncertain.update(v.slot for v in self.rig.ledger.open_vends())
            self.rig.crash_restart()
        self.rig.model.power_cut_pending = None

    @precondition(lambda self: True)
    @rule()
    def status_command(self) -> None:
        assert self.rig.command(cmd="status")["ok"]

    # -- what must always hold -----------------------------------------------------------
    @invariant()
    def stock_is_never_negative(self) -> None:
        assert all(count >= 0 for count in self.rig.counts().values())

    @invariant()
    def controller_stock_matches_the_packs_really_there(self) -> None:
        truth = self.rig.model.packs_left()
        for slot, count in self.rig.counts().items():
            if slot in self.uncertain:
                assert count <= truth[slot]
            else:
                assert count == truth[slot], f"slot {slot}: counted {count}, really {truth[slot]}"

    @invariant()
    def every_drop_is_counted_once_and_nothing_else(self) -> None:
        dropped: dict[str, int] = {}
        for slot, n in self.rig.model.packs_dropped().items():
            product = self.rig.config.slots[slot - 1].product
            dropped[product] = dropped.get(product, 0) + n
        totals = self.rig.ledger.totals()
        for product, n in dropped.items():
            confirmed = totals.get(product, {}).get("confirmed", 0)
            unconfirmed = totals.get(product, {}).get("unconfirmed", 0)
            assert confirmed <= n, "no pack is counted without a drop"
            if not self.power_cuts and not self.sensor_was_stuck:
                assert confirmed == n and unconfirmed == 0
            assert n <= confirmed + unconfirmed, "every drop is counted"
        phantom = sum(t["confirmed"] + t["unconfirmed"] for t in totals.values()) - sum(
            dropped.values())
        assert 0 <= phantom <= self.power_cuts + self.blind_vends

    @invariant()
    def closed_buckets_in_the_outbox_plus_the_open_one_hold_every_count(self) -> None:
        ledger, vm = self.rig.ledger, self.rig.vm
        queued: dict[str, int] = {}
        for _, kind, payload in ledger.outbox(limit=100_000):
            if kind == "usage":
                for product, n in json.loads(payload)["counts"].items():
                    queued[product] = queued.get(product, 0) + n
        open_counts = {}
        for b in ledger.usage():
            if b["id"] == vm.bucket.id:
                open_counts = b["counts"]
        for product, t in ledger.totals().items():
            assert queued.get(product, 0) + open_counts.get(product, 0) == t["confirmed"]

    @invariant()
    def a_slot_found_empty_is_not_turned_again_until_it_may_hold_packs(self) -> None:
        for number, slot in self.rig.vm.slots.items():
            turns = self.rig.model.slots[number].turns
            if slot.known_empty:
                assert turns == self.known_empty_turns.setdefault(number, turns), (
                    f"slot {number} was found empty and turned again")
            else:
                self.known_empty_turns.pop(number, None)

    @invariant()
    def no_vend_is_left_open_in_the_journal(self) -> None:
        assert self.rig.ledger.open_vends() == []


MachineLife.TestCase.settings = settings(
    max_examples=examples(60), stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMachineLife = MachineLife.TestCase


class GpioMachineLife(MachineLife):
    """The same life on the ``gpio`` backend: gpiozero's mock pins driven by the model."""

    backend = "gpio"


GpioMachineLife.TestCase.settings = MachineLife.TestCase.settings
TestGpioMachineLife = GpioMachineLife.TestCase

"""A client at the machine: presses, packs, jams, fall-backs and what the display says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.clock import FakeClock
from hal import VendOutcome
from tests.conftest import Rig, make_config


def totals(rig: Rig) -> dict:
    return rig.ledger.totals()


def test_a_press_drops_one_pack_counts_it_and_thanks_the_client(rig):
    rig.press(1)
    assert rig.model.packs_dropped()[1] + rig.model.packs_dropped()[2] == 1
    assert sum(rig.counts()[n] for n in (1, 2)) == 19
    assert totals(rig) == {"syringe-1ml": {"confirmed": 1, "unconfirmed": 0}}
    assert rig.vm.screen == "thank_you"
    assert rig.hw.display.lines[0].startswith("Thank you")
    assert "Naloxone saves lives" in rig.hw.display.lines


def test_the_fullest_healthy_slot_with_the_product_is_chosen(rig):
    rig.refill(1, 4)
    rig.press(1)
    assert rig.model.packs_dropped() == {1: 0, 2: 1, 3: 0, 4: 0}


def test_signposting_messages_rotate_after_each_vend(rig):
    seen = []
    for _ in range(3):
        rig.press(2)
        seen.append(rig.hw.display.lines[1])
    assert seen == ["Naloxone saves lives", "Free BBV testing", "Naloxone saves lives"]


def test_thank_you_screen_returns_to_idle_after_its_time(rig):
    rig.press(2)
    rig.tick(rig.config.thank_you_s - 1)
    assert rig.vm.screen == "thank_you"
    rig.tick(2)
    assert rig.vm.screen == "idle"
    assert rig.hw.display.lines[:2] == ["Free. No names. No limits.", "Press a button for a pack."]


def test_jammed_slot_falls_back_to_another_slot_with_the_same_product(rig):
    rig.model.inject("jam", 1)
    rig.refill(2, 5)  # slot 1 (10) is fuller, so it is tried first
    rig.press(1)
    assert rig.model.packs_dropped()[2] == 1
    assert rig.model.slots[1].turns == 2  # one turn and one retry
    assert rig.vm.slots[1].fault == "jam"
    assert rig.counts()[1] == 10 and rig.counts()[2] == 4
    assert rig.vm.screen == "thank_you"
    rig.close_bucket()
    assert [e["type"] for e in rig.ledger.events(3)][0] == "jam"
    assert "slot 1: jam" in rig.vm.state_report()["faults"]


def test_retries_setting_sets_how_many_more_turns_a_slot_gets(tmp_path, backend):
    rig = Rig(make_config(tmp_path, backend, vend={"retries": 3}))
    rig.fill_all()
    rig.model.inject("jam", 3)
    rig.press(2)
    assert rig.model.slots[3].turns == 4
    assert rig.vm.slots[3].fault == "jam"


def test_a_jammed_product_cannot_be_given_now_and_the_client_is_told_where_to_go(rig):
    rig.model.inject("jam", 3)
    rig.press(2)
    assert rig.vm.screen == "sorry"
    assert rig.hw.display.lines == ["Sorry, cannot give foil right now.", "Go to the Hub"]
    assert rig.hw.display.screen.crossed  # a crossed pictogram: nothing is given


def test_none_left_is_said_only_when_every_slot_of_it_is_counted_empty(rig):
    rig.refill(3, 0)
    rig.model.load(3, 0)
    rig.press(2)
    assert rig.hw.display.lines == ["Sorry, no foil left in here.", "Go to the Hub"]
    assert rig.hw.display.screen.name == "sorry" and rig.hw.display.screen.crossed
    assert totals(rig) == {}
    rig.press(2)  # a slot known empty is not turned again until staff could have filled it
    assert rig.model.slots[3].turns == 1


def test_a_jammed_slot_is_not_tried_again(rig):
    rig.model.inject("jam", 3)
    rig.press(2)
    rig.press(2)
    assert rig.model.slots[3].turns == 2  # one turn and one retry, the first time only


def test_a_dead_motor_faults_the_slot_at_once_and_falls_back(rig):
    rig.model.inject("motor_dead", 1)
    rig.press(1)
    assert rig.model.slots[1].turns == 1
    assert rig.vm.slots[1].fault == "jam"
    assert rig.model.packs_dropped()[2] == 1


def test_a_slot_counted_empty_is_still_tried_as_a_last_resort(rig):
    rig.refill(4, 0)
    rig.model.load(4, 2)  # staff miscounted: there are packs in there
    rig.press(3)
    assert rig.model.packs_dropped()[4] == 1
    assert totals(rig)["naloxone"]["confirmed"] == 1
    assert rig.counts()[4] == 0
    rig.close_bucket()
    assert "stock_mismatch" in [e["type"] for e in rig.ledger.events(5)]


def test_a_really_empty_slot_is_not_marked_faulty(rig):
    rig.model.load(4, 0)
    rig.refill(4, 0)
    rig.press(3)
    assert rig.vm.slots[4].fault is None
    assert rig.model.slots[4].turns == 1
    assert rig.vm.screen == "sorry"


def test_a_stuck_drop_sensor_still_serves_and_counts_unconfirmed(rig):
    rig.model.inject("sensor_stuck")
    rig.press(2)
    assert rig.model.packs_dropped()[3] == 1
    assert totals(rig)["foil"] == {"confirmed": 0, "unconfirmed": 1}
    assert rig.counts()[3] == 7
    assert "If nothing came out, press again." in rig.hw.display.lines


def test_low_and_empty_thresholds_raise_events_once(rig):
    rig.refill(4, 2)
    rig.press(3)
    rig.press(3)
    rig.press(3)
    rig.close_bucket()
    types = [e["type"] for e in reversed(rig.ledger.events(10)) if e["type"] in ("low_stock", "empty")]
    assert types == ["low_stock", "empty"]
    assert rig.vm.stock_report()["products"]["naloxone"] == {
        "count": 0, "status": "empty", "name": "naloxone kit"}  # with its display name


def test_door_open_puts_the_machine_in_service_and_presses_do_nothing(rig):
    rig.model.set_door(True)
    assert rig.vm.mode == "service"
    assert rig.hw.display.lines == ["Being restocked.", "Back in a few minutes."]
    rig.press(1)
    assert sum(rig.model.packs_dropped().values()) == 0
    rig.model.set_door(False)
    assert rig.vm.mode == "in_service"
    rig.press(1)
    assert sum(rig.model.packs_dropped().values()) == 1
    assert [e["type"] for e in rig.ledger.events(2)] == ["door_closed", "door_open"]


def test_out_of_service_points_to_the_alternative_and_vends_nothing(rig):
    assert rig.command(cmd="set_mode", mode="out_of_service")["ok"]
    rig.press(1)
    assert sum(rig.model.packs_dropped().values()) == 0
    assert rig.hw.display.lines[-1] == "Go to the Hub"
    assert rig.hw.led.state == "fault"


def test_unknown_button_is_ignored(rig):
    rig.press(9)
    assert sum(rig.model.packs_dropped().values()) == 0
    assert rig.vm.screen == "idle"


def test_display_says_when_the_hub_is_open(tmp_path, backend):
    wednesday_noon = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    rig = Rig(make_config(tmp_path, backend), FakeClock(wednesday_noon))
    rig.fill_all()
    assert "The Hub is open now - come in!" in rig.hw.display.lines
    rig.press(1)
    assert "The Hub is open now - come in!" in rig.hw.display.lines


def test_display_does_not_mention_the_hub_at_night(rig):
    assert not any("open now" in line for line in rig.hw.display.lines)


def test_min_interval_paces_the_mechanism_without_refusing(tmp_path, backend):
    rig = Rig(make_config(tmp_path, backend, vend={"min_interval_ms": 1500}))
    rig.fill_all()
    start = rig.clock.monotonic()
    rig.press(2)
    rig.press(2)
    assert rig.model.packs_dropped()[3] == 2
    assert rig.clock.monotonic() - start >= 1.5


def test_a_repeated_sequence_number_never_turns_the_motor_twice(rig):
    first = rig.hw.dispenser.vend(3, 500)
    again = rig.hw.dispenser.vend(3, 500)
    assert first == again == VendOutcome.DROPPED
    assert rig.model.slots[3].turns == 1


def test_silence_event_after_hours_without_a_vend(tmp_path, backend):
    rig = Rig(make_config(tmp_path, backend, alerts={"silence_hours": 1}))
    rig.fill_all()
    rig.tick(3599)
    assert "silence" not in [e["type"] for e in rig.ledger.events(5)]
    rig.tick(2)
    rig.tick(600)
    assert [e["type"] for e in rig.ledger.events(50)].count("silence") == 1


def test_a_silent_board_leaves_the_vend_open_until_it_answers_again(rig):
    if rig.config.hal == "gpio":
        pytest.skip("the gpio wiring has no board to fall silent")
    rig.model.inject("board_silent")
    rig.press(2)
    assert rig.vm.screen == "sorry"
    assert rig.hw.display.lines[0] == "Sorry, the machine cannot give packs right now."
    assert "board_offline" in rig.vm.state_report()["faults"]
    assert len(rig.ledger.open_vends()) == 1
    rig.model.inject("clear")  # the board answers again: the open vend is settled
    assert rig.ledger.open_vends() == []
    assert rig.ledger.totals() == {}  # it never ran, so nothing is counted
    assert "board_offline" not in rig.vm.state_report()["faults"]
    types = [e["type"] for e in rig.ledger.events(3)]
    assert types[:2] == ["board_online", "board_offline"]
    rig.press(2)
    assert rig.model.packs_dropped()[3] == 1


def test_a_power_cut_mid_vend_is_counted_unconfirmed_never_re_run(rig):
    from simulator.model import PowerCut

    rig.model.cut_power_during_next_turn("after_drop")
    try:
        rig.press(2)
    except PowerCut:
        pass
    rig.crash_restart()
    assert rig.model.slots[3].turns == 1  # not turned again at start-up
    assert rig.ledger.totals()["foil"] == {"confirmed": 0, "unconfirmed": 1}
    assert "unconfirmed_vend" not in [e["type"] for e in rig.ledger.events(5)]  # held
    rig.close_bucket()
    assert "unconfirmed_vend" in [e["type"] for e in rig.ledger.events(5)]
    assert rig.counts()[3] == 7

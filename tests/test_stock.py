"""Stock rules at their boundaries: a slot's and a product's status, and which slot serves."""

from __future__ import annotations

from controller.ledger import SlotState
from controller.stock import choose_slot, product_summary, slot_status


def slot(n: int, count: int, low_at: int = 2, **kw) -> SlotState:
    return SlotState(n, "foil", count, 10, low_at, **kw)


def test_a_slot_is_low_at_its_threshold_and_empty_at_nothing():
    assert [slot_status(slot(1, c)) for c in (3, 2, 1, 0)] == ["ok", "low", "low", "empty"]
    assert slot_status(slot(1, 5, fault="jam")) == "fault"
    assert slot_status(slot(1, 5, enabled=False, fault="jam")) == "disabled"


def test_a_product_is_low_at_the_sum_of_its_serving_slots_thresholds():
    def status(*counts: int) -> str:
        slots = [slot(i + 1, c) for i, c in enumerate(counts)]
        return product_summary(slots, ["foil"])["foil"]["status"]

    assert status(3, 2) == "ok"  # 5 > 2 + 2
    assert status(2, 2) == "low"  # 4 == 2 + 2
    assert status(4, 0) == "low"
    assert status(0, 0) == "empty"
    faulty = [slot(1, 9, fault="jam"), slot(2, 3)]  # only slot 2 serves: 3 > 2
    assert product_summary(faulty, ["foil"])["foil"] == {"count": 3, "status": "ok"}
    assert product_summary([slot(1, 9, fault="jam")], ["foil"])["foil"]["status"] == "fault"
    assert product_summary([], ["foil"])["foil"]["status"] == "empty"


def test_the_fullest_healthy_slot_serves_the_lowest_number_on_a_tie():
    slots = [slot(1, 4), slot(2, 6), slot(3, 6), slot(4, 9, fault="jam"), slot(5, 9, enabled=False)]
    assert choose_slot(slots, "foil").slot == 2
    assert choose_slot(slots, "foil", {2}).slot == 3
    assert choose_slot(slots, "foil", {2, 3}).slot == 1
    assert choose_slot(slots, "foil", {1, 2, 3}) is None
    assert choose_slot([slot(1, 0), slot(2, 0)], "foil").slot == 1  # counted empty: a last try
    assert choose_slot([slot(1, 0, known_empty=True)], "foil") is None
    assert choose_slot(slots, "water") is None

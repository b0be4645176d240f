"""Staff commands: what they change, and bad ones refused by field with nothing changed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.clock import iso
from controller.commands import run_command
from tests.conftest import examples


def snapshot(rig) -> tuple:
    vm = rig.vm
    rows = {t: rig.ledger.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("slots", "events", "outbox", "commands", "journal")}
    return (json.dumps(vm.stock_report()["slots"]), vm.mode, list(vm.messages), rows)


def test_refill_sets_the_packs_now_in_a_slot_and_logs_it(rig):
    answer = rig.command(id="r1", cmd="refill", slot=3, count=5)
    assert answer == {"id": "r1", "ok": True, "result": {"slots": [
        {"slot": 3, "product": "foil", "count": 5, "capacity": 8, "low_at": 2}]}}
    assert rig.vm.slots[3].count == 5
    assert rig.ledger.events(1)[0]["type"] == "refilled"


def test_refill_all_fills_every_slot_to_capacity(rig):
    rig.press(1)
    rig.press(2)
    assert rig.command(cmd="refill", all=True)["ok"]
    assert rig.counts() == {1: 10, 2: 10, 3: 8, 4: 5}


def test_a_replayed_command_id_runs_once_and_answers_the_same(rig):
    first = rig.command(id="same", cmd="refill", slot=3, count=5)
    rig.press(2)
    again = rig.command(id="same", cmd="refill", slot=3, count=5)
    assert again == first
    assert rig.vm.slots[3].count == 4  # the replay did not refill again
    assert [e["type"] for e in rig.ledger.events(50)].count("refilled") == 1 + 4  # fill_all + one


def test_a_replay_is_recognised_after_a_restart(rig):
    first = rig.command(id="persist", cmd="disable", slot=2)
    rig.restart()
    rig.command(cmd="enable", slot=2)
    assert rig.command(id="persist", cmd="disable", slot=2) == first
    assert rig.vm.slots[2].enabled


def test_a_replay_after_later_commands_is_answered_from_memory_until_its_expiry(rig):
    """A command's id is kept until its own expiry (20 h here), not until the next command
    or an hour: a replay two hours and several commands later still runs nothing."""
    expires = iso(rig.clock.now() + timedelta(hours=20))
    first = rig.command(id="A", cmd="refill", slot=3, count=5, expires=expires)
    rig.tick(2 * 3600)
    assert rig.command(id="B", cmd="refill", slot=3, count=8)["ok"]  # forgets what expired
    rig.press(2)  # 8 -> 7
    assert rig.command(id="A", cmd="refill", slot=3, count=5, expires=expires) == first
    assert rig.vm.slots[3].count == 7  # the replay did not refill again
    rig.tick(18 * 3600)  # exactly its expiry: another command forgets only what is past it
    assert rig.command(id="B2", cmd="enable", slot=2)["ok"]
    assert rig.command(id="A", cmd="refill", slot=3, count=5, expires=expires) == first
    rig.tick(1)  # past it: forgotten at the next command, and a replay is refused as expired
    assert rig.command(id="C", cmd="enable", slot=1)["ok"]
    late = rig.command(id="A", cmd="refill", slot=3, count=5, expires=expires)
    assert late["ok"] is False and late["error"].startswith("expires:")
    assert rig.vm.slots[3].count == 7 and rig.ledger.command_result("A") is None


def test_a_command_is_refused_at_its_expiry_and_taken_a_second_before(rig):
    now = rig.clock.now()
    at = rig.command(cmd="refill", slot=1, count=3, expires=iso(now))
    assert at["ok"] is False and at["error"].startswith("expires:")
    assert rig.vm.slots[1].count == 10
    assert rig.command(cmd="refill", slot=1, count=3, expires=iso(now + timedelta(seconds=1)))["ok"]
    max_age = rig.config.mqtt.command_max_age_s if rig.config.mqtt else 86400
    assert rig.command(cmd="refill", slot=1, count=4,
                       expires=iso(now + timedelta(seconds=max_age)))["ok"]
    too_far = rig.command(cmd="refill", slot=1, count=5,
                          expires=iso(now + timedelta(seconds=max_age + 1)))
    assert too_far["ok"] is False and too_far["error"].startswith("expires:")
    assert rig.vm.slots[1].count == 4


def test_disable_and_enable_take_a_slot_out_of_use_and_back(rig):
    assert rig.command(cmd="disable", slot=3)["ok"]
    rig.press(2)
    assert rig.model.packs_dropped()[3] == 0
    assert rig.vm.stock_report()["slots"][2]["status"] == "disabled"
    assert rig.command(cmd="enable", slot=3)["ok"]
    rig.press(2)
    assert rig.model.packs_dropped()[3] == 1


def test_clear_fault_puts_a_jammed_slot_back_in_use(rig):
    rig.model.inject("jam", 3)
    rig.press(2)
    assert rig.vm.slots[3].fault == "jam"
    rig.model.inject("clear", 3)
    assert rig.command(cmd="clear_fault", slot=3)["ok"]
    rig.press(2)
    assert rig.model.packs_dropped()[3] == 1
    assert rig.ledger.events(5)[0]["type"] == "fault_cleared"


def test_configure_slot_changes_product_and_forgets_the_old_count(rig):
    answer = rig.command(cmd="configure_slot", slot=2, product="naloxone", capacity=6, low_at=1)
    assert answer["ok"], answer
    assert rig.vm.slots[2].product == "naloxone" and rig.vm.slots[2].count == 0
    rig.restart()
    assert rig.vm.slots[2].product == "naloxone"  # a command's change outlives a restart


def test_an_edited_config_file_wins_over_an_older_command(tmp_path, rig):
    from tests.conftest import BASE, Rig, make_config

    rig.command(cmd="configure_slot", slot=4, capacity=7)
    rig.stop()
    slots = [dict(s) for s in BASE["slots"]]
    slots[3]["capacity"] = 9
    rig2 = Rig(make_config(tmp_path, slots=slots))
    assert rig2.vm.slots[4].capacity == 9
    assert rig2.vm.slots[4].count == 5  # the packs in there are still counted


def test_set_mode_and_set_messages(rig):
    assert rig.command(cmd="set_mode", mode="out_of_service")["result"] == {"mode": "out_of_service"}
    assert rig.command(cmd="set_mode", mode="in_service")["ok"]
    assert rig.command(cmd="set_messages", messages=["Hub open late on Thursday"])["ok"]
    rig.press(1)
    assert "Hub open late on Thursday" in rig.hw.display.lines
    rig.restart()
    assert rig.vm.messages == ["Hub open late on Thursday"]


def test_status_reports_state_and_stock(rig):
    result = rig.command(cmd="status")["result"]
    state = result["state"]
    assert set(state) == {"schema", "mode", "door", "sharps_bin", "temperature_c", "faults",
                          "version", "uptime_s", "clock_synced", "ts"}
    assert state["mode"] == "in_service" and state["faults"] == []
    assert state["ts"].endswith("Z")
    assert result["stock"]["products"]["syringe-1ml"] == {"count": 20, "status": "ok",
                                                             "name": "1ml syringes"}


def test_usage_command_returns_closed_buckets_and_their_totals_only(rig):
    rig.press(1)
    result = rig.command(cmd="usage")["result"]
    assert result == {"buckets": [], "totals": {}}  # the open bucket's counts would time a vend
    rig.tick(3600)
    result = rig.command(cmd="usage")["result"]
    assert result["totals"] == {"syringe-1ml": {"confirmed": 1, "unconfirmed": 0}}
    assert [b["end"] is not None for b in result["buckets"]] == [True]


def test_an_expired_command_is_refused_and_changes_nothing(rig):
    before = snapshot(rig)
    past = iso(rig.clock.now() - timedelta(minutes=1))
    answer = rig.command(id="late", cmd="refill", slot=1, count=0, expires=past)
    assert answer["ok"] is False and answer["error"].startswith("expires:")
    assert snapshot(rig) == before
    future = iso(rig.clock.now() + timedelta(minutes=1))
    assert rig.command(cmd="refill", slot=1, count=0, expires=future)["ok"]


BAD = [
    ({"cmd": "refill", "slot": 1, "count": 1}, "id"),
    ({"id": 5, "cmd": "refill", "slot": 1, "count": 1}, "id"),
    ({"id": "x" * 200, "cmd": "status"}, "id"),
    ({"id": "a"}, "cmd"),
    ({"id": "a", "cmd": "explode"}, "cmd"),
    ({"id": "a", "cmd": "refill", "slot": 99, "count": 1}, "slot"),
    ({"id": "a", "cmd": "refill", "slot": "1", "count": 1}, "slot"),
    ({"id": "a", "cmd": "refill", "slot": True, "count": 1}, "slot"),
    ({"id": "a", "cmd": "refill", "slot": 1}, "count"),
    ({"id": "a", "cmd": "refill", "slot": 1, "count": -1}, "count"),
    ({"id": "a", "cmd": "refill", "slot": 1, "count": 11}, "count"),
    ({"id": "a", "cmd": "refill", "slot": 1, "count": 1.5}, "count"),
    ({"id": "a", "cmd": "refill", "all": "yes"}, "all"),
    ({"id": "a", "cmd": "refill", "all": True, "slot": 1}, "all"),
    ({"id": "a", "cmd": "refill", "slot": 1, "count": 1, "colour": "red"}, "colour"),
    ({"id": "a", "cmd": "configure_slot", "slot": 1, "product": "heroin"}, "product"),
    ({"id": "a", "cmd": "configure_slot", "slot": 1, "capacity": 0}, "capacity"),
    ({"id": "a", "cmd": "configure_slot", "slot": 1, "capacity": 5}, "capacity"),
    ({"id": "a", "cmd": "configure_slot", "slot": 1, "low_at": 11}, "low_at"),
    ({"id": "a", "cmd": "enable"}, "slot"),
    ({"id": "a", "cmd": "set_mode", "mode": "party"}, "mode"),
    ({"id": "a", "cmd": "set_messages", "messages": "hello"}, "messages"),
    ({"id": "a", "cmd": "set_messages", "messages": ["ok", ""]}, "messages[1]"),
    ({"id": "a", "cmd": "set_messages", "messages": ["x"] * 21}, "messages"),
    ({"id": "a", "cmd": "status", "expires": "soon"}, "expires"),
    ({"id": "a", "cmd": "usage", "since": "last tuesday"}, "since"),
    ({"id": "a", "cmd": "events", "limit": 0}, "limit"),
]


@pytest.mark.parametrize(("request_", "field"), BAD, ids=[f"{r.get('cmd')}-{f}" for r, f in BAD])
def test_a_bad_command_names_the_field_and_changes_nothing(rig, request_, field):
    before = snapshot(rig)
    answer = run_command(rig.vm, request_)
    assert answer["ok"] is False
    assert answer["error"].startswith(f"{field}: "), answer["error"]
    assert snapshot(rig) == before


def test_a_request_that_is_not_an_object_is_refused(rig):
    for request in (None, [], "refill", 42):
        answer = run_command(rig.vm, request)
        assert answer == {"id": None, "ok": False, "error": "request: must be a JSON object"}


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=12,
)
REQUESTS = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=10) | JSONISH},
    optional={
        "cmd": st.sampled_from(["refill", "configure_slot", "enable", "disable", "clear_fault",
                                "set_mode", "set_messages", "status", "nope"]) | JSONISH,
        "slot": st.integers(-2, 6) | JSONISH, "count": st.integers(-2, 12) | JSONISH,
        "all": JSONISH, "mode": st.sampled_from(["in_service", "service", "x"]) | JSONISH,
        "product": st.sampled_from(["foil", "naloxone", "meth"]) | JSONISH,
        "capacity": st.integers(-1, 20) | JSONISH, "low_at": st.integers(-1, 20) | JSONISH,
        "messages": JSONISH, "extra": JSONISH,
    },
) | JSONISH


@settings(max_examples=examples(300), deadline=None)
@given(request=REQUESTS)
def test_any_request_gets_an_answer_and_only_valid_ones_change_anything(tmp_path_factory, request):
    from tests.conftest import Rig, make_config

    rig = Rig(make_config(tmp_path_factory.mktemp("fuzz")))
    try:
        before = snapshot(rig)
        answer = run_command(rig.vm, request)
        assert isinstance(answer["ok"], bool)
        assert set(answer) == ({"id", "ok", "result"} if answer["ok"] else {"id", "ok", "error"})
        if not answer["ok"]:
            assert snapshot(rig) == before
            assert ": " in answer["error"]
        json.dumps(answer)
    finally:
        rig.ledger.close()


def test_usage_answers_the_closed_buckets_that_start_between_since_and_until(rig):
    for _ in range(3):  # buckets 02:00-03:00, 03:00-04:00, 04:00-05:00, each with a pack
        rig.press(1)
        rig.tick(3600)
    answer = rig.command(cmd="usage", since="2026-11-25T03:00:00Z", until="2026-11-25T04:00:00Z")
    assert answer["ok"], answer
    assert [b["start"] for b in answer["result"]["buckets"]] == ["2026-11-25T03:00:00Z"]
    assert answer["result"]["buckets"][0]["counts"]["syringe-1ml"] == 1
    since = rig.command(cmd="usage", since="2026-11-25T03:00:00Z")["result"]["buckets"]
    until = rig.command(cmd="usage", until="2026-11-25T03:00:00Z")["result"]["buckets"]
    assert [b["start"][11:16] for b in since] == ["03:00", "04:00"]
    assert [b["start"][11:16] for b in until] == ["02:00"]
    for field in ("since", "until"):
        bad = rig.command(cmd="usage", **{field: "yesterday"})
        assert bad["ok"] is False and bad["error"] == f"{field}: must be a date or time such " \
                                                      "as 2026-11-01"


def test_events_answers_the_latest_events_whole_newest_first_and_as_many_as_asked(rig):
    rig.model.inject("jam", 3)
    rig.press(2)
    rig.close_bucket()
    events = rig.command(cmd="events", limit=2)["result"]["events"]
    assert [e["type"] for e in events] == ["jam", "refilled"]
    jam = events[0]
    assert set(jam) == {"id", "ts", "type", "slot", "product", "detail"}
    assert (jam["slot"], jam["product"]) == (3, "foil")
    assert len(rig.command(cmd="events")["result"]["events"]) == 5  # the 20 last: all of them
    assert rig.command(cmd="events", limit=0)["error"].startswith("limit:")


def test_the_mode_staff_set_outlives_a_restart_and_is_logged(rig):
    assert rig.command(cmd="set_mode", mode="out_of_service")["ok"]
    rig.restart()
    assert rig.vm.mode == "out_of_service"
    [event] = [e for e in rig.ledger.events(5) if e["type"] == "mode_changed"]
    assert event["detail"] == "out_of_service"


def test_staff_actions_are_logged_with_their_slot_product_and_what_changed(rig):
    rig.model.inject("jam", 3)
    rig.press(2)
    assert rig.command(cmd="clear_fault", slot=3)["ok"]
    assert rig.command(cmd="configure_slot", slot=4, capacity=6, low_at=0)["ok"]
    events = {e["type"]: e for e in rig.ledger.events(10)}
    cleared, configured = events["fault_cleared"], events["slot_configured"]
    assert (cleared["slot"], cleared["product"], cleared["detail"]) == (3, "foil", "was: jam")
    assert (configured["slot"], configured["product"], configured["detail"]) == (
        4, "naloxone", "capacity 6, low at 0")


def test_configure_slot_takes_capacities_from_1_to_1000_and_no_fewer_than_the_packs_in_it(rig):
    rig.refill(4, 0)
    rig.press(3)  # counted empty: known empty now, not turned again
    assert rig.vm.slots[4].known_empty
    assert rig.command(cmd="configure_slot", slot=4, capacity=1, low_at=0)["ok"]
    assert not rig.vm.slots[4].known_empty  # staff touched it: it may hold packs again
    assert rig.command(cmd="configure_slot", slot=4, capacity=1000)["ok"]
    for capacity in (0, 1001):
        answer = rig.command(cmd="configure_slot", slot=4, capacity=capacity)
        assert answer["error"].startswith("capacity:"), answer
    assert rig.command(cmd="refill", slot=3, count=8)["ok"]
    assert rig.command(cmd="configure_slot", slot=3, capacity=8)["ok"]  # exactly what is in it
    fewer = rig.command(cmd="configure_slot", slot=3, capacity=7)
    assert fewer["error"] == "capacity: 7 is less than the 8 packs in slot 3; refill it with " \
                             "fewer first"
    assert rig.vm.slots[3].capacity == 8

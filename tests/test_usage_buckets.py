"""Usage kept as counts per product per time bucket, across restarts, crashes and clock jumps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from controller.clock import FakeClock
from tests.conftest import Rig, make_config


def usage_messages(rig: Rig) -> list[dict]:
    return [json.loads(p) for _, kind, p in rig.ledger.outbox(10_000) if kind == "usage"]


def test_a_bucket_closes_on_the_hour_and_is_queued_with_its_counts(tmp_path):
    rig = Rig(make_config(tmp_path), FakeClock(datetime(2026, 11, 25, 2, 30, tzinfo=UTC)))
    rig.fill_all()
    rig.press(1)
    rig.press(1)
    rig.press(3)
    rig.tick(29 * 60)
    assert usage_messages(rig) == []
    rig.tick(61)
    [msg] = usage_messages(rig)
    assert msg["start"] == "2026-11-25T02:30:00Z" and msg["end"] == "2026-11-25T03:00:00Z"
    assert msg["counts"] == {"syringe-1ml": 2, "foil": 0, "naloxone": 1}
    assert msg["unconfirmed"] == {"syringe-1ml": 0, "foil": 0, "naloxone": 0}
    assert msg["clock_synced"] is True and msg["schema"] == 1
    assert rig.vm.bucket.start == datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def test_an_empty_bucket_is_still_published_with_zero_counts(rig):
    rig.tick(2 * 3600)
    messages = usage_messages(rig)
    assert len(messages) == 2
    assert all(set(m["counts"].values()) == {0} for m in messages)


def test_no_per_vend_time_survives_only_counts_per_bucket(rig):
    rig.press(1)
    rig.tick(3600)
    columns = {row[1] for row in rig.ledger.db.execute("PRAGMA table_info(bucket_counts)")}
    assert columns == {"bucket_id", "product", "confirmed", "unconfirmed"}
    assert rig.ledger.open_vends() == []
    [msg] = usage_messages(rig)
    assert set(msg) == {"schema", "id", "start", "end", "counts", "unconfirmed", "clock_synced"}


def test_graceful_stop_closes_the_open_bucket_at_the_stop_time(tmp_path):
    rig = Rig(make_config(tmp_path), FakeClock(datetime(2026, 11, 25, 2, 0, tzinfo=UTC)))
    rig.fill_all()
    rig.press(2)
    rig.clock.advance(17 * 60)
    rig.stop()
    [msg] = usage_messages_after(rig)
    assert msg["end"] == "2026-11-25T02:17:00Z"
    assert msg["counts"]["foil"] == 1


def usage_messages_after(rig: Rig) -> list[dict]:
    from controller.ledger import Ledger

    ledger = Ledger(rig.config.database_path, rig.config.machine_id)
    try:
        return [json.loads(p) for _, kind, p in ledger.outbox(10_000) if kind == "usage"]
    finally:
        ledger.close()


def test_a_crash_leaves_no_count_behind_the_next_start_closes_the_bucket(rig):
    rig.press(1)
    rig.clock.advance(600)
    rig.crash_restart()
    [msg] = usage_messages(rig)
    assert msg["counts"]["syringe-1ml"] == 1
    rig.press(1)
    assert rig.ledger.totals()["syringe-1ml"]["confirmed"] == 2


def test_unsynced_clock_at_boot_then_ntp_jump_keeps_buckets_honest(tmp_path):
    # The Pi boots thinking it is 1970-ish (no RTC); NTP then jumps the clock forwards.
    clock = FakeClock(datetime(2000, 1, 1, 0, 0, tzinfo=UTC), synced=False)
    rig = Rig(make_config(tmp_path), clock)
    rig.fill_all()
    rig.press(1)
    rig.tick(300)
    clock.jump(datetime(2026, 11, 25, 3, 20, 0, tzinfo=UTC), synced=True)
    rig.tick(1)
    rig.press(1)
    [unsynced] = usage_messages(rig)
    assert unsynced["clock_synced"] is False
    assert unsynced["counts"]["syringe-1ml"] == 1
    # the bucket lasted as long as it really ran, not 26 years
    length = datetime.fromisoformat(unsynced["end"]) - datetime.fromisoformat(unsynced["start"])
    assert timedelta(minutes=5) <= length <= timedelta(minutes=6)
    bucket = rig.vm.bucket
    assert bucket.clock_synced and bucket.planned_end == datetime(2026, 11, 25, 4, 0, tzinfo=UTC)
    rig.tick(45 * 60)
    second = usage_messages(rig)[1]
    assert second["clock_synced"] is True and second["counts"]["syringe-1ml"] == 1


def test_a_backwards_clock_jump_does_not_stretch_or_shrink_a_bucket(rig):
    start = rig.vm.bucket.start
    rig.clock.jump(start - timedelta(hours=5))
    rig.tick(3600)
    [msg] = usage_messages(rig)
    assert msg["start"] < msg["end"]
    assert datetime.fromisoformat(msg["end"]) - datetime.fromisoformat(msg["start"]) <= timedelta(
        hours=1)


def test_bucket_ids_are_unique_and_stable_in_the_outbox(rig):
    rig.tick(5 * 3600)
    ids = [m["id"] for m in usage_messages(rig)]
    assert len(ids) == len(set(ids)) == 5
    assert ids == [m["id"] for m in usage_messages(rig)]


def test_bucket_minutes_sets_the_bucket_length(tmp_path):
    rig = Rig(make_config(tmp_path, usage={"bucket_minutes": 15}))
    rig.tick(3600)
    assert len(usage_messages(rig)) == 4

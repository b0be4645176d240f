"""The vending machine's brain: one event at a time, from a button press to a counted pack.

:class:`VendingMachine` takes hardware events, commands and timer ticks through
:meth:`VendingMachine.handle`, one at a time, and acts through the HAL. It
knows nothing of pins, bytes or sockets, and reads time only from its clock, so
a test can drive it step by step.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

import controller
from controller import stock, texts
from controller.clock import Clock, iso
from controller.config import Config, Product
from controller.i18n import VOICES, Language, language
from controller.ledger import Bucket, Event, Ledger, SlotState, StorageError, new_bucket_id
from controller.messages import VERSION_TEXT, Mode, StateMessage, UsageMessage
from controller.schedule import is_open
from controller.writebehind import WriteBehind
from hal import (
    BoardFault,
    BoardLink,
    ButtonPressed,
    DoorChanged,
    Hardware,
    HardwareEvent,
    LedState,
    SharpsBinChanged,
    VendOutcome,
)
from hal.screens import Screen
from hal.speech import Speaker

log = logging.getLogger(__name__)

SORRY_S = 10.0
UPDATE_MAX_S = 600  # a firmware update's pause of vending ends by itself after this long
PAGE_S = 4.0  # a screen longer than its display turns a page this often
REST_SCREENS = ("idle", "service", "out_of_service")
LANGUAGE_QUIET_S = 60.0
SETTLE_FIRST_S = 5.0  # a vend not heard of is asked about again after this, then twice as long
SETTLE_MAX_S = 60.0
MAX_ROLLS_PER_TICK = 200
MAX_CATCH_UP = timedelta(days=1)


class Change(enum.StrEnum):
    """What the hub should hear about (``VendingMachine.on_change``)."""

    STATE = "state"  # the state message
    STOCK = "stock"  # the stock message
    OUTBOX = "outbox"  # usage or events are queued
    BUCKET = "bucket"  # a usage bucket closed: stock (as the interval allows) and the outbox
    EVERYTHING = "status"  # state and stock again (the status command)


@dataclass
class PublicView:
    """What the hub may know: slots and faults as at the last bucket close, with staff's
    changes and the hardware's news since (promise 2: nothing published times a vend; what
    a vend causes is shown when its bucket closes). The rest of the state message (mode,
    door, sharps bin) is not moved by vends and is read live."""

    slots: dict[int, SlotState]
    board_online: bool = True
    sensor_fault: bool = False
    storage_fault: str | None = None
    board_fault: str | None = None
    board_outdated: bool = False  # the board's firmware is older than this host's link


@dataclass(frozen=True)
class Tick:
    """Time has passed: roll buckets, end timed screens, retry unsaved writes."""


class VendingMachine:
    """One machine: its slots, its counts and what its client sees.

    Parameters: the validated ``config``; the ``ledger`` (SQLite); the opened
    ``hardware``; a ``clock``. ``on_change`` is called with a :class:`Change` whenever
    the hub should hear something. What a vend causes (events, faults, stock, log lines)
    is held until the bucket it happened in closes, and told then with that bucket's
    usage, stamped with its end; what the hub is shown is :attr:`published`, never the
    live counts.
    """

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        hardware: Hardware,
        clock: Clock,
        on_change: Callable[[str], None] | None = None,
        speaker: Speaker | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.hw = hardware
        self.clock = clock
        self.on_change = on_change or (lambda kind: None)
        self.products: dict[str, Product] = {p.id: p for p in config.products}
        self.by_button: dict[int, Product] = {p.button: p for p in config.products}
        self.slots: dict[int, SlotState] = {}
        self.staff_mode = Mode.IN_SERVICE
        self.door_open = False
        self.bin_full = False
        self.board_online = True
        self.board_fault: str | None = None
        self.board_outdated = False
        self._mode_before_update: Mode | None = None  # see pause_for_update
        self._update_paused_at: float | None = None  # when vending was paused for one
        self._update_done: str | None = None  # an automatic update's outcome, for the loop
        self.messages: list[str] = list(config.messages)
        self.bucket: Bucket | None = None
        self._bucket_opened = 0.0
        self._message_index = 0
        self._screen = "idle"
        self._shown: Screen | None = None
        self._build: Callable[[Language], Screen] | None = None
        self.languages = [language(code) for code in config.languages]
        self.language = self.languages[0]
        self._last_press: float | None = None
        self.speaker = speaker
        self._screen_until: float | None = None
        self._page_at: float | None = None  # when the display turns to the next page
        self._last_vend_end: float | None = None
        self._silence_raised = False
        self._quiet_s = 0.0  # closed buckets in a row, in seconds, without a pack
        self._bucket_packs = 0  # packs counted into the open bucket
        self._mismatch_raised: set[int] = set()  # slots that vended while counted empty
        self._unconfirmed_raised = False  # latched while the drop sensor is blind
        self._in_vend = False  # a press is being served: what it changes waits for the close
        self._held_logs: list[tuple[int, str]] = []  # log lines told at the bucket's close
        self._told_expired: set[int] = set()  # slots past their date used: told once a refill
        self.published = PublicView({})
        self.closed_at: datetime | None = None  # the end of the bucket closed last
        self.closed_news = False  # that close told what vends caused
        self._last_seq = 0
        self.writes = WriteBehind(ledger, clock, on_fault=self._storage_changed)
        self._closing: set[int] = set()  # journal entries settled in memory, maybe not on disk
        self.sensor_fault = False
        self.started_mono = 0.0
        self._settle_at: float | None = None  # when to ask the hardware about open vends again
        # packs counted into the open bucket by this process, (confirmed, unconfirmed) by
        # product; and the usage of closed buckets whose close is not on the card yet, so a
        # stop with the card failing can still send them (same ids: nothing doubles)
        self._tally: dict[str, list[int]] = {}
        self.unsaved_usage: dict[str, dict] = {}
        self.storage_note: str | None = None  # a database replaced at start, until a refill
        self._settle_wait = SETTLE_FIRST_S

    # -- life cycle ------------------------------------------------------------
    def start(self) -> None:
        """Load state, apply the config's slot layout, settle any vend a crash left open."""
        self.started_mono = self.clock.monotonic()
        self.staff_mode = Mode(self.ledger.meta("mode", Mode.IN_SERVICE))
        self.storage_note = self.ledger.meta("storage_note", None)
        self.messages = self.ledger.meta("messages", None) or list(self.config.messages)
        # a crash while the card failed can leave last_seq behind numbers the board has seen
        self._last_seq = max(int(self.ledger.meta("last_seq", 0)), self.hw.dispenser.highest_seq())
        self.door_open = self.hw.door_open()
        self.bin_full = self.hw.sharps_bin_full()
        self.slots = self.ledger.slots()
        stale = self.ledger.open_bucket()
        bucket = self._new_bucket(self.clock.now())
        # what vends caused before a crash: told with the bucket they happened in, which
        # closes now (without a bucket left open, with the next close)
        if stale is not None:
            self._held_logs = [(_level(e), _describe(e)) for e in self.ledger.held_events()]
        stale_end = self._stale_end(stale) if stale is not None else None

        def begin(now: datetime) -> None:
            self._apply_slot_layout()
            if stale is not None:
                self.ledger.finish_bucket(stale, stale_end, list(self.products))
                self.ledger.release_held(stale_end)
            self.ledger.start_bucket(bucket)

        # a full or failing card must not keep the machine from starting: access first
        self.write(begin)
        self.ledger.truncate_wal()
        self._tell_held_logs()
        if stale_end is not None:
            self.closed_at, self.closed_news = stale_end, True
        self.reconcile()
        self._quiet_s = self.ledger.quiet_seconds()
        self._silence_raised = self._quiet_s >= self.config.silence_hours * 3600
        self.published = self._public_now()
        self._show_rest_screen()
        log.info("started: %d slots, mode %s, %d vends open in the journal",
                 len(self.slots), self.mode, len(self.ledger.open_vends()))

    def stop(self, card_tries: int = 3) -> None:
        """Close the usage bucket now (its end is the stop time), with what its vends caused,
        and queue it. With changes still waiting for a failing card, the card is tried again
        (``card_tries`` times, a second apart); what it still cannot keep is left in
        :attr:`unsaved_usage` (the usage messages of the buckets concerned) and
        :meth:`unsaved_summary` for the daemon to send and say."""
        for attempt in range(card_tries):
            if self._write_waiting():
                break
            if attempt + 1 < card_tries:
                self.clock.sleep(1.0)
        if self.bucket is not None:
            bucket = self.bucket
            end = min(bucket.planned_end, bucket.start + timedelta(
                seconds=self.clock.monotonic() - self._bucket_opened))
            end = max(end, bucket.start)
            self._close_bucket(bucket, end, None)
            self.bucket = None
        self.hw.led.set(LedState.OFF)

    # -- the one entry point ---------------------------------------------------
    def handle(self, event: HardwareEvent | Tick) -> None:
        """Act on one event from the hardware or the clock (the daemon runs commands)."""
        if isinstance(event, Tick):
            self.tick()
        elif isinstance(event, ButtonPressed):
            self.press(event.button, event.at)
        elif isinstance(event, DoorChanged):
            self._door(event.open)
        elif isinstance(event, SharpsBinChanged):
            self._sharps_bin(event.full)
        elif isinstance(event, BoardLink):
            self._board_link(event.online, event.detail, event.outdated)
        elif isinstance(event, BoardFault):
            self._board_fault(event.detail)
        else:
            log.warning("ignored unknown event %r", event)
        return None

    # -- vending ---------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return Mode.SERVICE if self.door_open else self.staff_mode

    def press(self, button: int, at: float | None = None) -> bool:
        """A client pressed ``button`` (at monotonic time ``at``, if known): one press, one
        pack. True if a pack came out. A press that has waited longer than
        ``vend.press_max_wait_s`` for its turn is let go: whoever pressed has walked away.
        The language and say-again buttons change the language or speak the screen."""
        if at is not None and self.clock.monotonic() - at > self.config.press_max_wait_s:
            return False
        self._last_press = self.clock.monotonic()
        if button == self.config.language_button:
            self._next_language()
            return False
        if button == self.config.say_again_button:
            if self._shown is not None:
                self._speak(self._shown)
            return False
        product = self.by_button.get(button)
        if product is None:
            log.debug("button %d has no product; ignored", button)
            return False
        if self.mode == Mode.SERVICE:
            self._show("service", texts.service)
            return False
        if self.mode == Mode.OUT_OF_SERVICE:
            self._show("sorry", lambda t: texts.out_of_service(self._elsewhere(t), t), SORRY_S)
            return False
        self._pace()
        self._show("vending", lambda t: texts.vending(product.name_in(t.code), t, product.id))
        self.hw.led.set(LedState.BUSY)
        self._in_vend = True
        try:
            served = self._vend_product(product)
        finally:
            self._in_vend = False
            self._last_vend_end = self.clock.monotonic()
            self.hw.led.set(self._led_state())
        return served

    def _pace(self) -> None:
        gap = self.config.vend_min_interval_ms / 1000
        if gap and self._last_vend_end is not None:
            wait = self._last_vend_end + gap - self.clock.monotonic()
            if wait > 0:
                self.clock.sleep(wait)

    def _vend_product(self, product: Product) -> bool:
        tried: set[int] = set()
        today = self.clock.now().astimezone(self.config.tz).date()
        while (slot := stock.choose_slot(self.slots.values(), product.id, tried,
                                         today)) is not None:
            tried.add(slot.slot)
            if stock.expired(slot, today) and slot.slot not in self._told_expired:
                # access first: the client gets the pack; staff hear of it with the bucket
                self._told_expired.add(slot.slot)
                self._cause(Event("expired_given", slot.slot, slot.product,
                                  f"packs past their date ({slot.expires}) given out: no slot "
                                  "in date had any"))
            turns = 0
            while True:
                counted_empty = slot.count <= 0
                seq = self._open_vend(slot)
                outcome = self.hw.dispenser.vend(slot.slot, seq)
                # debug only: the journal would time every vend to the microsecond
                log.debug("vend seq=%d slot=%d product=%s: %s", seq, slot.slot, product.id,
                          outcome.value)
                if outcome is VendOutcome.UNCERTAIN:
                    self._drop_sensor_failing()
                    if counted_empty:
                        # Likely nothing there: don't invent a pack from a blind sensor.
                        self._settle(seq)
                        break
                if outcome in (VendOutcome.DROPPED, VendOutcome.UNCERTAIN):
                    if outcome is VendOutcome.DROPPED:
                        self._drop_sensor_working()
                    self._count_pack(seq, slot, product.id, outcome is VendOutcome.DROPPED)
                    self._thank(certain=outcome is VendOutcome.DROPPED)
                    return True
                if outcome is VendOutcome.UNKNOWN:
                    # The journal entry stays open; the board is asked again while the daemon
                    # runs (tick) and when its link comes back. Whether the board is offline
                    # is the link's to say: one lost reply is not a board gone.
                    self._settle_later()
                    self._show("sorry", lambda t: texts.cannot_dispense(self._elsewhere(t), t),
                               SORRY_S)
                    return False
                turns += 1
                if outcome is VendOutcome.NOTHING_DROPPED and counted_empty:
                    self._known_empty(seq, slot)
                    break
                if outcome is VendOutcome.NOTHING_DROPPED and turns <= self.config.vend_retries:
                    self._settle(seq)
                    continue
                detail = ("motor did not finish its turn" if outcome is VendOutcome.MOTOR_STALLED
                          else f"nothing dropped after {turns} turns: jammed or empty")
                self._fault_slot(seq, slot, detail)
                break
        # "none left" only when every slot of it is counted empty; else it cannot be given now
        empty = all(s.count <= 0 for s in self.slots.values() if s.product == product.id)
        self._show("sorry", lambda t: texts.sorry(product.name_in(t.code), self._elsewhere(t),
                                                  t, product.id, empty), SORRY_S)
        return False

    def _drop_sensor_failing(self) -> None:
        if not self.sensor_fault:
            self.sensor_fault = True
            self._cause(Event("sensor_fault", detail="drop sensor stuck: vends are unconfirmed"))

    def _drop_sensor_working(self) -> None:
        if self.sensor_fault:
            self.sensor_fault = False
            self._unconfirmed_raised = False
            self._cause(Event("fault_cleared", detail="drop sensor works again"))

    def _open_vend(self, slot: SlotState) -> int:
        self._last_seq += 1
        seq = self._last_seq
        try:
            self.ledger.open_vend(seq, slot.slot, slot.product, self.hw.dispenser.boot_id())
        except StorageError as e:
            self.writes.failed(e)  # access first: turn the motor all the same
            # the number is used even so: saved with the other changes once the card works
            self.write(lambda now: self.ledger.raise_last_seq(seq))
        return seq

    def _settle(self, seq: int) -> None:
        self._closing.add(seq)
        self.write(lambda now: self.ledger.close_vend(seq))

    def _known_empty(self, seq: int, slot: SlotState) -> None:
        """Counted empty and nothing dropped: it is empty. Not turned again until a refill,
        a cleared fault or the door (staff may restock by hand) says it may hold packs."""
        slot.known_empty = True
        snapshot = replace(slot)
        self._closing.add(seq)

        def write(now: datetime) -> None:
            self.ledger.close_vend(seq)
            self.ledger.save_slot(snapshot)

        self.write(write)

    def _count_pack(self, seq: int | None, slot: SlotState | None, product: str,
                    confirmed: bool) -> None:
        """One pack out: journal closed, stock down, usage up, events queued; one commit."""
        events: list[Event] = []
        snapshot = None
        if slot is not None:
            before = stock.slot_status(slot)
            if slot.count <= 0 and slot.slot not in self._mismatch_raised:
                # said once, until staff count the slot again: not on every vend
                self._mismatch_raised.add(slot.slot)
                events.append(Event("stock_mismatch", slot.slot, product,
                                    "a pack dropped from a slot counted empty: please recount"))
            slot.count = max(0, slot.count - 1)
            after = stock.slot_status(slot)
            if after != before and after in ("low", "empty"):
                events.append(Event("low_stock" if after == "low" else "empty", slot.slot, product,
                                    f"{slot.count} left"))
            snapshot = replace(slot)
        if not confirmed and not self._unconfirmed_raised:
            self._unconfirmed_raised = self.sensor_fault  # a blind sensor: said once
            events.append(Event("unconfirmed_vend", slot.slot if slot else None, product,
                                "the drop sensor could not confirm this pack"))
        bucket = self.bucket
        stores = [self._hold_event(event) for event in events]

        if seq is not None:
            self._closing.add(seq)

        def write(now: datetime) -> None:
            if seq is not None:
                self.ledger.close_vend(seq)
            if snapshot is not None:
                self.ledger.save_slot(snapshot)
            self.ledger.count(bucket, product, confirmed)
            for store in stores:
                store(now)

        self.write(write)
        self._bucket_packs += 1
        self._tally.setdefault(product, [0, 0])[0 if confirmed else 1] += 1

    def _fault_slot(self, seq: int, slot: SlotState, detail: str) -> None:
        slot.fault = "jam"
        snapshot = replace(slot)
        self._closing.add(seq)
        store = self._hold_event(Event("jam", slot.slot, slot.product, detail))

        def write(now: datetime) -> None:
            self.ledger.close_vend(seq)
            self.ledger.save_slot(snapshot)
            store(now)

        self.write(write)

    def _elsewhere(self, t: Language) -> str:
        return self.config.alternative_in(t.code)

    def _thank(self, certain: bool) -> None:
        message = None
        if self.messages:
            message = self.messages[self._message_index % len(self.messages)]
            self._message_index += 1
        hub_open = self.hub_open()
        self._show("thank_you", lambda t: texts.thank_you(
            message and self.config.message_in(t.code, message), hub_open, self.config.hub_name,
            certain, t), self.config.thank_you_s)

    # -- reconciliation --------------------------------------------------------
    def reconcile(self) -> None:
        """Settle every vend left open in the journal by asking the hardware what happened:
        at start, when the board's link comes back, and while the daemon runs for a vend
        whose outcome was not heard (asked again after 5 s, 10 s, ... then every minute).

        Never re-runs a vend: an outcome that cannot be learnt is counted unconfirmed.
        """
        unsettled = False
        for vend in self.ledger.open_vends():
            if vend.seq in self._closing:
                continue  # settled already; its closing waits in memory for the card
            outcome = self.hw.dispenser.recall(vend.seq, vend.board)
            slot = self.slots.get(vend.slot)
            if outcome is VendOutcome.UNKNOWN:
                unsettled = True
                continue  # no answer; asked again later
            # told at the bucket's close: the moment it is settled is tied to the press
            self._held_logs.append((logging.INFO, f"settled a vend left open (slot {vend.slot}):"
                                    f" {outcome.value if outcome else 'cannot be learnt'}"))
            if outcome is VendOutcome.DROPPED:
                self._count_pack(vend.seq, slot, vend.product, confirmed=True)
            elif outcome is None or outcome is VendOutcome.UNCERTAIN:
                self._count_pack(vend.seq, slot, vend.product, confirmed=False)
            else:
                self._settle(vend.seq)
        if unsettled:
            self._settle_later()
        else:
            self._settle_at, self._settle_wait = None, SETTLE_FIRST_S

    def _settle_later(self) -> None:
        """Ask the hardware about the open vends again after a while, longer each time."""
        if self._settle_at is None:
            self._settle_wait = SETTLE_FIRST_S
        else:
            self._settle_wait = min(self._settle_wait * 2, SETTLE_MAX_S)
        self._settle_at = self.clock.monotonic() + self._settle_wait

    def _settle_if_due(self) -> None:
        due = self._settle_at is not None and self.clock.monotonic() >= self._settle_at
        if due and self.board_online:  # an offline board is asked when its link comes back
            self.reconcile()

    # -- other hardware events -------------------------------------------------
    def _door(self, is_open: bool) -> None:
        if is_open == self.door_open:
            return
        self.door_open = is_open
        if not is_open:  # staff may have put packs in by hand: every slot may vend again
            self._forget_known_empty()
            self._mismatch_raised.clear()
        self._record(Event("door_open" if is_open else "door_closed"))
        self._show_rest_screen()
        self._changed(Change.STATE)

    def _forget_known_empty(self) -> None:
        reopened = [slot for slot in self.slots.values() if slot.known_empty]
        for slot in reopened:
            slot.known_empty = False
        snapshots = [replace(slot) for slot in reopened]

        def write(now: datetime) -> None:
            for snapshot in snapshots:
                self.ledger.save_slot(snapshot)

        if snapshots:
            self.write(write)

    def _sharps_bin(self, full: bool) -> None:
        if full == self.bin_full:
            return
        self.bin_full = full
        if full:
            self._record(Event("sharps_bin_full"))
        self._changed(Change.STATE)

    def _board_link(self, online: bool, detail: str, outdated: bool = False) -> None:
        self.board_online = online
        self.board_outdated = outdated and not online
        kind = "board_online" if online else "board_outdated" if outdated else "board_offline"
        self._record(Event(kind, detail=detail or None))
        self._reveal(_set(board_online=online, board_outdated=self.board_outdated))
        if online:
            self.reconcile()
        self.hw.led.set(self._led_state())

    def _board_fault(self, detail: str | None) -> None:
        if detail == self.board_fault:
            return
        self.board_fault = detail
        self._record(Event("board_fault", detail=detail) if detail else
                     Event("fault_cleared", detail="the board makes sense again"))
        self._reveal(_set(board_fault=detail))
        self.hw.led.set(self._led_state())

    # -- telling the hub, and holding what a vend caused until its bucket closes ----
    def _record(self, event: Event) -> None:
        self.write(self._store_event(event))
        self._changed(Change.OUTBOX)

    def _store_event(self, event: Event) -> Callable[[datetime], None]:
        """How to write ``event`` (inside a transaction): queued for the hub now, or, while a
        press is served (a card that fails or recovers under a vend's write), held."""
        if self._in_vend:
            return self._hold_event(event)
        return lambda now: self.ledger.add_event(event, now)

    def _cause(self, event: Event) -> None:
        """A vend caused ``event``: held until its bucket closes."""
        self.write(self._hold_event(event))

    def _hold_event(self, event: Event) -> Callable[[datetime], None]:
        """How to hold ``event`` (inside a transaction), with no time, until the bucket closes;
        its log line waits with it."""
        self._held_logs.append((_level(event), _describe(event)))
        return lambda now: self.ledger.hold_event(event)

    def _reveal(self, change: Callable[[PublicView], None]) -> None:
        """Let the hub see ``change`` now; while a press is served, at the bucket's close
        (which shows everything as it then is)."""
        if not self._in_vend:
            change(self.published)
            self._changed(Change.STATE)
            self._changed(Change.STOCK)

    def _say(self, level: int, message: str) -> None:
        """A log line; one written while a press is served waits for the bucket's close
        (journald stamps each line)."""
        if self._in_vend:
            self._held_logs.append((level, message))
        else:
            log.log(level, "%s", message)

    def _tell_held_logs(self) -> None:
        logs, self._held_logs = self._held_logs, []
        for level, message in logs:
            log.log(level, "%s", message)

    def _changed(self, kind: Change) -> None:
        if not self._in_vend:  # what a press changed is told when its bucket closes
            self.on_change(kind)

    def _public_now(self) -> PublicView:
        """Everything as it is now: what the hub may see once a bucket has closed."""
        return PublicView({n: replace(s) for n, s in self.slots.items()}, self.board_online,
                          self.sensor_fault, self.storage_fault, self.board_fault,
                          self.board_outdated)

    # -- time ------------------------------------------------------------------
    def tick(self) -> None:
        """Periodic work: timed screens, open vends, bucket boundaries, unsaved writes."""
        mono = self.clock.monotonic()
        if self.writes.pending:
            self._write_waiting()
        if self._screen_until is not None and mono >= self._screen_until:
            self._show_rest_screen()
        elif self._page_at is not None and mono >= self._page_at:
            self._page_at = mono + PAGE_S
            self.hw.display.turn_page()
        self._settle_if_due()
        self._roll_bucket_if_due()
        self._back_to_first_language()
        self._update_board_if_due()

    def _update_board_if_due(self) -> None:
        """``[serial] auto_update``: a board too old for this software (board_outdated) is
        updated by the daemon itself, once a day at most (the day kept in the database, so
        a restart does not try again at once), in ``[serial] update_hours`` (a quiet hour:
        vending is paused for the seconds it takes). The writing is done by a thread of its
        own, so that the loop goes on (the systemd watchdog hears from it); its outcome is
        taken up at the next tick. And a pause that nothing ended (``nspvend board update``
        cut off) ends by itself after :data:`UPDATE_MAX_S`."""
        if self._update_done is not None:
            done, self._update_done = self._update_done, None
            self.resume_after_update(done)
            return
        paused = self._update_paused_at
        if paused is not None:
            if self.clock.monotonic() - paused > UPDATE_MAX_S and hasattr(self.hw, "resume_board"):
                log.warning("the board's update did not end within %d s: serving again",
                            UPDATE_MAX_S)
                self.hw.resume_board(wait=0)
                self.resume_after_update(f"not ended within {UPDATE_MAX_S} s: serving again")
            return
        settings = self.config.serial
        if not (settings.auto_update and self.board_outdated
                and hasattr(self.hw, "release_board")):
            return
        local = self.clock.now().astimezone(self.config.tz)
        if not any(w.contains(local) for w in settings.update_hours) or (
                local.date().isoformat() == self.ledger.meta("board_update_tried")):
            return
        day = local.date().isoformat()
        self.write(lambda now: self.ledger.set_meta("board_update_tried", day))
        log.warning("the board's firmware is too old for this software: updating it "
                    "([serial] auto_update)")
        self.pause_for_update()
        threading.Thread(target=self._update_board, name="board-update", daemon=True).start()

    def _update_board(self) -> None:
        """The automatic update's work, off the loop (see :meth:`_update_board_if_due`)."""
        from hal.boardupdate import UpdateError, write_firmware

        self.hw.release_board()
        try:
            files = write_firmware(self.hw.board_port(), say=log.info)
            done = f"{files} files written"
        except UpdateError as e:
            log.error("board update: %s", e)
            done = f"failed: {e}"
        except Exception as e:  # noqa: BLE001 (whatever it was, vending must come back)
            log.error("board update failed: %s", e)
            done = f"failed: {type(e).__name__}"
        online = self.hw.resume_board()
        self._update_done = f"[serial] auto_update: {done}; " + (
            f"the board answered: firmware {self.hw.board_firmware()}" if online
            else "the board has not answered yet")

    def _roll_bucket_if_due(self) -> None:
        for _ in range(MAX_ROLLS_PER_TICK):
            if not self._roll_bucket_once():
                return

    def _roll_bucket_once(self) -> bool:
        """Close the bucket if its time is up and open the next; False if not due."""
        bucket = self.bucket
        if bucket is None:
            return False
        elapsed = self.clock.monotonic() - self._bucket_opened
        length = (bucket.planned_end - bucket.start).total_seconds()
        synced = self.clock.synced()
        if synced and not bucket.clock_synced:
            # The wall clock just became trustworthy: end the unsynced bucket by how long
            # it really ran, and start a fresh one on the right time.
            end = bucket.start + timedelta(seconds=int(elapsed))
            new = self._new_bucket(self.clock.now())
        elif elapsed >= length:
            end = bucket.planned_end
            if synced and self.clock.now() - end > MAX_CATCH_UP:
                new = self._new_bucket(self.clock.now())  # a long stall: start afresh
            else:
                # Carry on the same timeline: the next bucket began when this one ended.
                new = self._new_bucket(end, opened=self._bucket_opened + length)
        else:
            return False
        self._close_bucket(bucket, end, new)
        return True

    def _close_bucket(self, bucket: Bucket, end: datetime, new: Bucket | None) -> None:
        """Close ``bucket`` at ``end`` and open ``new`` (None: the daemon stops): its usage,
        then what its vends caused (held events, faults, stock, log lines), all stamped
        ``end``, are queued in one transaction and told together, in that order."""
        products = list(self.products)
        silence = self._silence_after(bucket, end)
        tally, self._tally = self._tally, {}
        usage = UsageMessage(
            id=bucket.id, start=iso(bucket.start), end=iso(end),
            counts={p: tally.get(p, [0, 0])[0] for p in [*products, *tally]},
            unconfirmed={p: tally.get(p, [0, 0])[1] for p in [*products, *tally]},
            clock_synced=bucket.clock_synced).payload()

        def write(now: datetime) -> None:
            self.ledger.finish_bucket(bucket, end, products)
            self.ledger.release_held(end)
            if silence is not None:
                self.ledger.add_event(silence, end)
            if new is not None:
                self.ledger.start_bucket(new)

        if not self.write(write):
            self.unsaved_usage[bucket.id] = usage
        self.ledger.truncate_wal()  # the WAL's pages held the order of this bucket's vends
        self.closed_news = bool(self._held_logs) or _news(self.published) != _news(self._public_now())
        self.closed_at = end
        self._tell_held_logs()
        self.published = self._public_now()
        self._changed(Change.BUCKET)

    def seconds_to_close(self) -> float:
        """How long until the open bucket closes (and what its vends caused is told)."""
        if self.bucket is None:
            return 0.0
        length = (self.bucket.planned_end - self.bucket.start).total_seconds()
        return max(0.0, length - (self.clock.monotonic() - self._bucket_opened))

    def _silence_after(self, bucket: Bucket, end: datetime) -> Event | None:
        """Whole buckets without a pack while in service: past ``silence_hours``, the
        machine is probably broken. Decided only as a bucket closes, so it times nothing."""
        packs, self._bucket_packs = self._bucket_packs, 0
        if packs or self.mode != Mode.IN_SERVICE:
            self._quiet_s, self._silence_raised = 0.0, False
            return None
        self._quiet_s += max(0.0, (end - bucket.start).total_seconds())
        if self._silence_raised or self._quiet_s < self.config.silence_hours * 3600:
            return None
        self._silence_raised = True
        return Event("silence", detail=f"no pack dispensed for {self._quiet_s / 3600:.0f} h")

    def _bucket_length(self) -> timedelta:
        return timedelta(minutes=self.config.bucket_minutes)

    def _new_bucket(self, start: datetime, opened: float | None = None) -> Bucket:
        """Begin counting into a new bucket from ``start`` (the caller records it)."""
        synced = self.clock.synced()
        length = self._bucket_length()
        start = start.replace(microsecond=0)
        if synced:
            midnight = start.replace(hour=0, minute=0, second=0)
            planned_end = midnight + length * ((start - midnight) // length + 1)
        else:
            planned_end = start + length
        self.bucket = Bucket(new_bucket_id(), start, planned_end, synced)
        self._bucket_opened = self.clock.monotonic() if opened is None else opened
        return self.bucket

    def _stale_end(self, stale: Bucket) -> datetime:
        """A bucket left open by a crash ends at the latest time it can have run to."""
        return max(stale.start, min(stale.planned_end, self.clock.now().replace(microsecond=0)))

    # -- storage ---------------------------------------------------------------
    def write(self, change: Callable[[datetime], None]) -> bool:
        """Commit ``change`` now, or keep it in order for later if storage is failing; True
        if nothing waits for the card any more."""
        if self.writes.write(change):
            self._saved()
            return True
        return False

    def _write_waiting(self) -> bool:
        if self.writes.flush():
            self._saved()
            return True
        return False

    def _saved(self) -> None:
        """Everything is on the card now."""
        self._closing.clear()
        self.unsaved_usage.clear()

    def unsaved_summary(self) -> str | None:
        """What a stop could not keep on the card, in words for one log line; None if all
        of it is kept."""
        if not self.writes.pending:
            return None
        packs: dict[str, list[int]] = {}
        for usage in self.unsaved_usage.values():
            for key, i in (("counts", 0), ("unconfirmed", 1)):
                for product, n in usage[key].items():
                    packs.setdefault(product, [0, 0])[i] += n
        counted = ", ".join(f"{p} {c}" + (f" (+{u} unconfirmed)" if u else "")
                            for p, (c, u) in sorted(packs.items()) if c or u) or "no packs"
        return (f"{self.writes.pending} changes could not be written to {self.ledger.path} "
                f"({self.writes.fault}): the usage of {len(self.unsaved_usage)} buckets "
                f"({counted}), the slot counts and the events since the card failed; "
                "recount the slots at the machine")

    @property
    def storage_fault(self) -> str | None:
        """What is wrong with storage: the card failing now, or a database replaced at start
        (until staff refill, recounting the slots)."""
        return self.writes.fault or self.storage_note

    def database_replaced(self, note: str) -> None:
        """The database could not be used at start and was replaced (``note`` says how):
        staff and the hub are told, and ``storage_fault`` stays until a refill."""
        self.storage_note = note
        event = Event("storage_fault", detail=note)

        def write(now: datetime) -> None:
            self.ledger.set_meta("storage_note", note)
            self.ledger.add_event(event, now)

        self.write(write)
        self._reveal(_set(storage_fault=self.storage_fault))
        self._changed(Change.OUTBOX)

    def recounted(self) -> None:
        """Staff refilled (inside :meth:`staff_change`): the counts are theirs again."""
        if self.storage_note is not None:
            self.storage_note = None
            self.ledger.set_meta("storage_note", None)
            self.published.storage_fault = self.storage_fault

    def _storage_changed(self, fault: str | None, was: str | None) -> None:
        if fault is not None:
            self._say(logging.ERROR, f"cannot write {self.ledger.path}: {fault}; vending goes on,"
                                     " counts kept in memory")
            self._reveal(_set(storage_fault=self.storage_fault))
            return
        self._say(logging.WARNING, f"storage works again after: {was}")
        self.writes.write(self._store_event(Event("storage_fault", detail=f"recovered from: {was}")))
        self._reveal(_set(storage_fault=self.storage_fault))
        self._changed(Change.OUTBOX)

    # -- what the client sees --------------------------------------------------
    def hub_open(self) -> bool:
        local = self.clock.now().astimezone(self.config.tz)
        return is_open(self.config.hub_open, local)

    def _show(self, name: str, build: Callable[[Language], Screen],
              seconds: float | None = None) -> None:
        """Show screen ``name``, built by ``build`` in the current language (kept, so the
        language button can show it again in another). A timed screen stays long enough for
        each of its pages to be read once; what was being said stops with the old screen."""
        screen = build(self.language)
        self._screen, self._build, self._shown = name, build, screen
        if self.speaker is not None:
            self.speaker.hush()
        pages = self.hw.display.show(screen) or 1
        now = self.clock.monotonic()
        self._page_at = now + PAGE_S  # a display with one page ignores the turn
        self._screen_until = now + max(seconds, pages * PAGE_S) if seconds else None
        if self.config.speak_every_screen:
            self._speak(screen)

    def _show_rest_screen(self) -> None:
        if self.mode == Mode.SERVICE:
            self._show("service", texts.service)
        elif self.mode == Mode.OUT_OF_SERVICE:
            self._show("out_of_service", lambda t: texts.out_of_service(self._elsewhere(t), t))
        else:
            hub_open = self.hub_open()
            say = self.config.say_again_button if self.speaker else None
            self._show("idle", lambda t: texts.idle(hub_open, self.config.hub_name, t,
                                                    self.config.language_button, say))
        self.hw.led.set(self._led_state())

    # -- languages and the voice ---------------------------------------------------------
    def _next_language(self) -> None:
        """The language button: the next enabled language, and the screen again in it."""
        i = self.languages.index(self.language)
        self.language = self.languages[(i + 1) % len(self.languages)]
        if self._build is not None:
            left = (self._screen_until - self.clock.monotonic()
                    if self._screen_until is not None else None)
            self._show(self._screen, self._build, max(left, 1.0) if left is not None else None)

    def _back_to_first_language(self) -> None:
        """After a quiet minute the next client meets the first language."""
        quiet = self._last_press is None or (
            self.clock.monotonic() - self._last_press >= LANGUAGE_QUIET_S)
        if self.language is not self.languages[0] and quiet and self._screen in REST_SCREENS:
            self.language = self.languages[0]
            self._show_rest_screen()

    def _speak(self, screen: Screen) -> None:
        if self.speaker is None:
            return
        local = self.clock.now().astimezone(self.config.tz)
        quiet = any(window.contains(local) for window in self.config.quiet_hours)
        self.speaker.say(screen.to_speak(), VOICES.get(screen.language, screen.language),
                         self.config.quiet_volume if quiet else self.config.volume)

    def _led_state(self) -> LedState:
        if self.mode != Mode.IN_SERVICE:
            return LedState.FAULT if self.mode == Mode.OUT_OF_SERVICE else LedState.BUSY
        return LedState.FAULT if self.faults() else LedState.READY

    @property
    def screen(self) -> str:
        return self._screen

    # -- a firmware update -----------------------------------------------------------
    def pause_for_update(self) -> None:
        """Stop serving while ``nspvend board update`` writes the board's firmware: "Being
        restocked" on the screen (as with the door open), a press not answered. Between
        presses by construction: commands run on the loop that serves them. The mode is
        not saved: a daemon restarted meanwhile serves as before."""
        if self._mode_before_update is None:
            self._mode_before_update = self.staff_mode
            self._update_paused_at = self.clock.monotonic()
        self.staff_mode = Mode.SERVICE
        self._record(Event("board_update", detail="writing the board's firmware; vending paused"))
        self._show_rest_screen()
        self._changed(Change.STATE)

    def resume_after_update(self, detail: str) -> None:
        """Serve again as before the update (``detail``: how it went, for the events); a
        mode staff set meanwhile stands."""
        if self._mode_before_update is not None and self.staff_mode == Mode.SERVICE:
            self.staff_mode = self._mode_before_update
        self._mode_before_update = self._update_paused_at = None
        self._record(Event("board_update", detail=detail))
        self._show_rest_screen()
        self._changed(Change.STATE)

    # -- reports ---------------------------------------------------------------
    def faults(self, public: bool = False) -> list[str]:
        """What is wrong now, or (``public``) as far as the hub may know yet."""
        view = self.published if public else self._public_now()
        faults = [f"slot {s.slot}: {s.fault}" for s in view.slots.values() if s.fault]
        if view.board_outdated:  # there, but its firmware wants updating: says what to do
            faults.append("board_outdated")
        elif not view.board_online:
            faults.append("board_offline")
        if view.board_fault:
            faults.append("board_fault")
        if self.bin_full:
            faults.append("sharps_bin_full")
        if view.storage_fault:
            faults.append("storage_fault")
        if view.sensor_fault:
            faults.append("drop_sensor")
        return faults

    def state_report(self, public: bool = False, at: datetime | None = None) -> dict:
        """The ``state`` message: live for staff at the machine, or (``public``) the hub's;
        stamped ``at`` (a bucket's end, when told at its close) or now."""
        temperature = self.hw.temperature_c()
        if temperature is not None and not math.isfinite(temperature):
            temperature = None
        return StateMessage(
            mode=self.mode, door="open" if self.door_open else "closed",
            sharps_bin="full" if self.bin_full else "ok", temperature_c=temperature,
            faults=tuple(self.faults(public)), version=controller.__version__,
            uptime_s=int(self.clock.monotonic() - self.started_mono),
            clock_synced=self.clock.synced(), ts=iso(at or self.clock.now()),
            board_firmware=self.board_firmware()).payload()

    def board_firmware(self) -> str | None:
        """The dispenser board's firmware version, as its hello said (None: no board of its
        own, or none heard; a backend may not say)."""
        said = getattr(self.hw, "board_firmware", None)
        firmware = said() if callable(said) else None
        return firmware if isinstance(firmware, str) and VERSION_TEXT.fullmatch(firmware) else None

    def stock_report(self, public: bool = False, at: datetime | None = None) -> dict:
        """The ``stock`` message: live counts for staff at the machine, or (``public``) the
        counts as at the last bucket close with staff's changes since; stamped ``at`` or now."""
        slots = self.published.slots if public else self.slots
        return stock.stock_message(slots.values(), self.products, iso(at or self.clock.now()),
                                   {p.id: p.name for p in self.products.values()},
                                   {p.id: p.shelf_life_months for p in self.products.values()
                                    if p.shelf_life_months}).payload()

    # -- staff changes -------------------------------------------------------------
    def staff_change(self, change: Callable[[datetime], Any]) -> Any:
        """Run a staff change (a command) now, in one transaction, or not at all.

        If it cannot be saved, everything it changed in memory is put back and
        :class:`StorageError` is raised. Staff's changes are shown to the hub at once:
        they come from staff, not from a client.
        """
        saved = (dict(self.slots), self.staff_mode, list(self.messages),
                 copy.deepcopy(self.published), set(self._mismatch_raised), self.storage_note)
        try:
            result = self.writes.now_or_never(change)
        except StorageError:
            (self.slots, self.staff_mode, self.messages, self.published,
             self._mismatch_raised, self.storage_note) = saved
            raise
        if self.screen in REST_SCREENS:
            self._show_rest_screen()
        self._changed(Change.STOCK)
        self._changed(Change.STATE)
        self._changed(Change.OUTBOX)
        return result

    def set_slot(self, new: SlotState) -> None:
        """Staff changed a slot (inside :meth:`staff_change`): what they changed is shown to
        the hub as it is; what vends did to the slot since the last bucket close is not."""
        old = self.slots.get(new.slot)
        self.slots[new.slot] = new
        shown = self.published.slots.get(new.slot)
        if old is None or shown is None:
            self.published.slots[new.slot] = replace(new)
        else:
            for f in fields(SlotState):
                if getattr(new, f.name) != getattr(old, f.name):
                    setattr(shown, f.name, getattr(new, f.name))
        self._mismatch_raised.discard(new.slot)
        self._told_expired.discard(new.slot)
        self.ledger.save_slot(new)

    # -- slot layout -----------------------------------------------------------
    def _apply_slot_layout(self) -> None:
        """Make the slots match the config file: a slot whose config entry changed since
        the last start takes the file's product, capacity and threshold; one changed by a
        command since then keeps the command's. Called inside a transaction."""
        signatures = self.ledger.config_signatures()
        wanted = {s.slot: s for s in self.config.slots}
        for number in sorted(set(self.slots) - set(wanted)):
            log.warning("slot %d is no longer in %s; forgetting it", number, self.config.path)
            self.ledger.delete_slot(number)
            del self.slots[number]
        for number, cfg in wanted.items():
            sig = json.dumps([cfg.product, cfg.capacity, cfg.low_at])
            current = self.slots.get(number)
            if current is None:
                current = SlotState(number, cfg.product, 0, cfg.capacity, cfg.low_at)
            elif signatures.get(number) == sig:
                continue
            else:
                if current.product != cfg.product:
                    current.count = 0  # a different product: what is in there is unknown
                    current.expires = None
                current.product, current.capacity, current.low_at = (
                    cfg.product, cfg.capacity, cfg.low_at)
                current.count = min(current.count, cfg.capacity)
            self.slots[number] = current
            self.ledger.save_slot(current, config_sig=sig)


def _set(**values: Any) -> Callable[[PublicView], None]:
    """A change to the public view: these fields take these values."""

    def change(view: PublicView) -> None:
        for name, value in values.items():
            setattr(view, name, value)

    return change


_LEVELS = {"jam": logging.WARNING, "sensor_fault": logging.ERROR, "empty": logging.WARNING,
           "stock_mismatch": logging.WARNING, "expired_given": logging.WARNING}


def _level(event: Event) -> int:
    return _LEVELS.get(event.type, logging.INFO)


def _describe(event: Event) -> str:
    """The log line for an event a vend caused (written when its bucket closes)."""
    where = ""
    if event.slot is not None:
        where = f"slot {event.slot} ({event.product}): " if event.product else f"slot {event.slot}: "
    elif event.product:
        where = f"{event.product}: "
    return f"{where}{event.type.replace('_', ' ')}" + (f": {event.detail}" if event.detail else "")


def _news(view: PublicView) -> tuple:
    """What in a public view is worth telling at once (its counts are not)."""
    return (tuple((n, stock.slot_status(s), s.fault) for n, s in sorted(view.slots.items())),
            view.board_online, view.sensor_fault, view.storage_fault, view.board_fault,
            view.board_outdated)

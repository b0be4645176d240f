"""The vending machine's brain: one event at a time, from a button press to a counted pack.

:class:`VendingMachine` takes hardware events, commands and timer ticks through
:meth:`VendingMachine.handle`, one at a time, and acts through the HAL. It
knows nothing of pins, bytes or sockets, and reads time only from its clock, so
a test can drive it step by step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import controller
from controller import stock, texts
from controller.clock import Clock, iso
from controller.config import Config, Product
from controller.ledger import Bucket, Event, Ledger, SlotState, StorageError, new_bucket_id
from controller.schedule import is_open
from hal import (
    BoardLink,
    ButtonPressed,
    DoorChanged,
    Hardware,
    HardwareEvent,
    SharpsBinChanged,
    VendOutcome,
)

log = logging.getLogger(__name__)

MODES = ("in_service", "out_of_service", "service")
SORRY_S = 10.0
MAX_ROLLS_PER_TICK = 200
MAX_CATCH_UP = timedelta(days=1)


@dataclass(frozen=True)
class Tick:
    """Time has passed: roll buckets, end timed screens, retry unsaved writes."""


@dataclass
class Command:
    """A staff command (control socket or hub), answered through ``reply``."""

    request: Any
    reply: Callable[[dict], None] | None = None
    origin: str = "local"


class VendingMachine:
    """One machine: its slots, its counts and what its client sees.

    Parameters: the validated ``config``; the ``ledger`` (SQLite); the opened
    ``hardware``; a ``clock``. ``on_change`` is called with ``"state"``,
    ``"stock"``, ``"stock_urgent"`` or ``"outbox"`` whenever the hub should hear.
    """

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        hardware: Hardware,
        clock: Clock,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.hw = hardware
        self.clock = clock
        self.on_change = on_change or (lambda kind: None)
        self.products: dict[str, Product] = {p.id: p for p in config.products}
        self.by_button: dict[int, Product] = {p.button: p for p in config.products}
        self.slots: dict[int, SlotState] = {}
        self.staff_mode = "in_service"
        self.door_open = False
        self.bin_full = False
        self.board_online = True
        self.messages: list[str] = list(config.messages)
        self.bucket: Bucket | None = None
        self._bucket_opened = 0.0
        self._message_index = 0
        self._screen = "idle"
        self._screen_until: float | None = None
        self._last_vend_end: float | None = None
        self._last_vend_mono = 0.0
        self._silence_raised = False
        self._last_seq = 0
        self._unsaved: list[Callable[[datetime], None]] = []
        self._closing: set[int] = set()  # journal entries settled in memory, maybe not on disk
        self.storage_fault: str | None = None
        self.sensor_fault = False
        self.started_mono = 0.0

    # -- life cycle ------------------------------------------------------------
    def start(self) -> None:
        """Load state, apply the config's slot layout, settle any vend a crash left open."""
        self.started_mono = self._last_vend_mono = self.clock.monotonic()
        self.staff_mode = self.ledger.meta("mode", "in_service")
        self.messages = self.ledger.meta("messages", None) or list(self.config.messages)
        # a crash while the card failed can leave last_seq behind numbers the board has seen
        self._last_seq = max(int(self.ledger.meta("last_seq", 0)),
                             getattr(self.hw.dispenser, "highest_seq", lambda: 0)())
        self.door_open = self.hw.door_open()
        self.bin_full = self.hw.sharps_bin_full()
        self.slots = self.ledger.slots()
        stale = self.ledger.open_bucket()
        bucket = self._new_bucket(self.clock.now())

        def begin(now: datetime) -> None:
            self._apply_slot_layout()
            if stale is not None:
                self._close_stale_bucket(stale)
            self.ledger.start_bucket(bucket)

        # a full or failing card must not keep the machine from starting: access first
        self.write(begin)
        self.reconcile()
        self._show_rest_screen()
        log.info("started: %d slots, mode %s, %d vends open in the journal",
                 len(self.slots), self.mode, len(self.ledger.open_vends()))

    def stop(self) -> None:
        """Close the usage bucket now (its end is the stop time) and queue it."""
        self._flush_unsaved()
        if self.bucket is not None:
            bucket = self.bucket
            end = min(bucket.planned_end, bucket.start + timedelta(
                seconds=self.clock.monotonic() - self._bucket_opened))
            end = max(end, bucket.start)
            products = list(self.products)
            self.write(lambda now: self.ledger.finish_bucket(bucket, end, products))
            self.bucket = None
            self.on_change("outbox")
        self.hw.led.set("off")

    # -- the one entry point ---------------------------------------------------
    def handle(self, event: HardwareEvent | Tick | Command) -> dict | None:
        """Act on one event; a :class:`Command` returns (and replies) its result."""
        if isinstance(event, Tick):
            self.tick()
        elif isinstance(event, ButtonPressed):
            self.press(event.button, event.at)
        elif isinstance(event, DoorChanged):
            self._door(event.open)
        elif isinstance(event, SharpsBinChanged):
            self._sharps_bin(event.full)
        elif isinstance(event, BoardLink):
            self._board_link(event.online, event.detail)
        elif isinstance(event, Command):
            from controller.commands import run_command

            result = run_command(self, event.request)
            if event.reply:
                event.reply(result)
            return result
        else:
            log.warning("ignored unknown event %r", event)
        return None

    # -- vending ---------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "service" if self.door_open else self.staff_mode

    def press(self, button: int, at: float | None = None) -> bool:
        """A client pressed ``button`` (at monotonic time ``at``, if known): one press, one
        pack. True if a pack came out. A press that has waited longer than
        ``vend.press_max_wait_s`` for its turn is let go: whoever pressed has walked away."""
        if at is not None and self.clock.monotonic() - at > self.config.press_max_wait_s:
            return False
        product = self.by_button.get(button)
        if product is None:
            log.debug("button %d has no product; ignored", button)
            return False
        if self.mode == "service":
            self._show("service", texts.service())
            return False
        if self.mode == "out_of_service":
            self._show("sorry", texts.out_of_service(self.config.alternative), SORRY_S)
            return False
        self._pace()
        self._show("vending", texts.vending(product.name))
        self.hw.led.set("busy")
        try:
            served = self._vend_product(product)
        finally:
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
        while (slot := stock.choose_slot(self.slots.values(), product.id, tried)) is not None:
            tried.add(slot.slot)
            turns = 0
            while True:
                counted_empty = slot.count <= 0
                seq = self._open_vend(slot)
                outcome = self.hw.dispenser.vend(slot.slot, seq)
                log.info("vend seq=%d slot=%d product=%s: %s", seq, slot.slot, product.id,
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
                    # The journal entry stays open until the board can tell us.
                    self.board_online = False
                    self._show("sorry", texts.cannot_dispense(self.config.alternative), SORRY_S)
                    self.on_change("state")
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
        self._show("sorry", texts.sorry(product.name, self.config.alternative), SORRY_S)
        return False

    def _drop_sensor_failing(self) -> None:
        if not self.sensor_fault:
            self.sensor_fault = True
            log.error("the drop sensor cannot be trusted: packs are counted unconfirmed")
            self._record(Event("sensor_fault", detail="drop sensor stuck: vends are unconfirmed"))
            self.on_change("state")

    def _drop_sensor_working(self) -> None:
        if self.sensor_fault:
            self.sensor_fault = False
            self._record(Event("fault_cleared", detail="drop sensor works again"))
            self.on_change("state")

    def _open_vend(self, slot: SlotState) -> int:
        self._last_seq += 1
        seq = self._last_seq
        try:
            self.ledger.open_vend(seq, slot.slot, slot.product, self.clock.now(),
                                  self.hw.dispenser.boot_id())
        except StorageError as e:
            self._storage_failed(e)  # access first: turn the motor all the same
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
            if slot.count <= 0:
                events.append(Event("stock_mismatch", slot.slot, product,
                                    "a pack dropped from a slot counted empty: please recount"))
            slot.count = max(0, slot.count - 1)
            after = stock.slot_status(slot)
            if after != before and after in ("low", "empty"):
                events.append(Event("low_stock" if after == "low" else "empty", slot.slot, product,
                                    f"{slot.count} left"))
            snapshot = replace(slot)
        if not confirmed:
            events.append(Event("unconfirmed_vend", slot.slot if slot else None, product,
                                "the drop sensor could not confirm this pack"))
        bucket = self.bucket

        if seq is not None:
            self._closing.add(seq)

        def write(now: datetime) -> None:
            if seq is not None:
                self.ledger.close_vend(seq)
            if snapshot is not None:
                self.ledger.save_slot(snapshot)
            self.ledger.count(bucket, product, confirmed)
            for event in events:
                self.ledger.add_event(event, now)

        self.write(write)
        self._last_vend_mono = self.clock.monotonic()
        self._silence_raised = False
        self.on_change("stock_urgent" if events else "stock")
        if events:
            self.on_change("outbox")

    def _fault_slot(self, seq: int, slot: SlotState, detail: str) -> None:
        slot.fault = "jam"
        snapshot = replace(slot)
        self._closing.add(seq)

        def write(now: datetime) -> None:
            self.ledger.close_vend(seq)
            self.ledger.save_slot(snapshot)
            self.ledger.add_event(Event("jam", slot.slot, slot.product, detail), now)

        self.write(write)
        log.warning("slot %d (%s) marked faulty: %s", slot.slot, slot.product, detail)
        self.on_change("stock_urgent")
        self.on_change("state")
        self.on_change("outbox")

    def _thank(self, certain: bool) -> None:
        message = None
        if self.messages:
            message = self.messages[self._message_index % len(self.messages)]
            self._message_index += 1
        lines = texts.thank_you(message, self.hub_open(), self.config.hub_name, certain)
        self._show("thank_you", lines, self.config.thank_you_s)

    # -- reconciliation --------------------------------------------------------
    def reconcile(self) -> None:
        """Settle every vend left open in the journal by asking the hardware what happened.

        Never re-runs a vend: an outcome that cannot be learnt is counted unconfirmed.
        """
        for vend in self.ledger.open_vends():
            if vend.seq in self._closing:
                continue  # settled already; its closing waits in memory for the card
            outcome = self.hw.dispenser.recall(vend.seq, vend.board)
            slot = self.slots.get(vend.slot)
            log.info("reconcile seq=%d slot=%d: %s", vend.seq, vend.slot,
                     outcome.value if outcome else "cannot be learnt")
            if outcome is VendOutcome.UNKNOWN:
                self.board_online = False
                continue  # the board is not answering; ask again when it is back
            if outcome is VendOutcome.DROPPED:
                self._count_pack(vend.seq, slot, vend.product, confirmed=True)
            elif outcome is None or outcome is VendOutcome.UNCERTAIN:
                self._count_pack(vend.seq, slot, vend.product, confirmed=False)
            else:
                self._settle(vend.seq)

    # -- other hardware events -------------------------------------------------
    def _door(self, is_open: bool) -> None:
        if is_open == self.door_open:
            return
        self.door_open = is_open
        if not is_open:  # staff may have put packs in by hand: every slot may vend again
            self._forget_known_empty()
        self._record(Event("door_open" if is_open else "door_closed"))
        self._show_rest_screen()
        self.on_change("state")

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
        self.on_change("state")

    def _board_link(self, online: bool, detail: str) -> None:
        self.board_online = online
        self._record(Event("board_online" if online else "board_offline", detail=detail or None))
        if online:
            self.reconcile()
        self.hw.led.set(self._led_state())
        self.on_change("state")

    def _record(self, event: Event) -> None:
        self.write(lambda now: self.ledger.add_event(event, now))
        self.on_change("outbox")

    # -- time ------------------------------------------------------------------
    def tick(self) -> None:
        """Periodic work: timed screens, bucket boundaries, silence alert, unsaved writes."""
        mono = self.clock.monotonic()
        if self._unsaved:
            self._flush_unsaved()
        if self._screen_until is not None and mono >= self._screen_until:
            self._show_rest_screen()
        self._roll_bucket_if_due()
        silent_for = mono - self._last_vend_mono
        if (self.mode == "in_service" and not self._silence_raised
                and silent_for >= self.config.silence_hours * 3600):
            self._silence_raised = True
            self._record(Event("silence", detail=f"no pack dispensed for {silent_for / 3600:.0f} h"))

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
        products = list(self.products)

        def write(now: datetime) -> None:
            self.ledger.finish_bucket(bucket, end, products)
            self.ledger.start_bucket(new)

        self.write(write)
        self.on_change("outbox")
        return True

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

    def _close_stale_bucket(self, stale: Bucket) -> None:
        """A bucket left open by a crash: close it at the latest time it can have run to."""
        end = max(stale.start, min(stale.planned_end, self.clock.now().replace(microsecond=0)))
        self.ledger.finish_bucket(stale, end, list(self.products))

    # -- storage ---------------------------------------------------------------
    def write(self, change: Callable[[datetime], None]) -> None:
        """Commit ``change`` now, or keep it in order for later if storage is failing."""
        self._unsaved.append(change)
        self._flush_unsaved()

    def _flush_unsaved(self) -> None:
        while self._unsaved:
            change = self._unsaved[0]
            try:
                with self.ledger.transaction():
                    change(self.clock.now())
            except StorageError as e:
                self._storage_failed(e)
                return
            self._unsaved.pop(0)
        self._closing.clear()  # all on disk now
        if self.storage_fault is not None:
            fault, self.storage_fault = self.storage_fault, None
            log.warning("storage works again after: %s", fault)
            with self.ledger.transaction():
                self.ledger.add_event(Event("storage_fault", detail=f"recovered from: {fault}"),
                                      self.clock.now())
            self.on_change("state")
            self.on_change("outbox")

    def _storage_failed(self, error: Exception) -> None:
        if self.storage_fault is None:
            log.error("cannot write %s: %s; vending goes on, counts kept in memory",
                      self.ledger.path, error)
            self.on_change("state")
        self.storage_fault = str(error)

    # -- what the client sees --------------------------------------------------
    def hub_open(self) -> bool:
        local = self.clock.now().astimezone(self.config.tz)
        return is_open(self.config.hub_open, local)

    def _show(self, screen: str, lines: list[str], seconds: float | None = None) -> None:
        self._screen = screen
        self._screen_until = self.clock.monotonic() + seconds if seconds else None
        self.hw.display.show(lines)

    def _show_rest_screen(self) -> None:
        if self.mode == "service":
            self._show("service", texts.service())
        elif self.mode == "out_of_service":
            self._show("out_of_service", texts.out_of_service(self.config.alternative))
        else:
            self._show("idle", texts.idle(self.hub_open(), self.config.hub_name))
        self.hw.led.set(self._led_state())

    def _led_state(self) -> str:
        if self.mode != "in_service":
            return "fault" if self.mode == "out_of_service" else "busy"
        return "fault" if self.faults() else "ready"

    @property
    def screen(self) -> str:
        return self._screen

    # -- reports ---------------------------------------------------------------
    def faults(self) -> list[str]:
        faults = [f"slot {s.slot}: {s.fault}" for s in self.slots.values() if s.fault]
        if not self.board_online:
            faults.append("board_offline")
        if self.bin_full:
            faults.append("sharps_bin_full")
        if self.storage_fault:
            faults.append("storage_fault")
        if self.sensor_fault:
            faults.append("drop_sensor")
        return faults

    def state_report(self) -> dict:
        return {
            "schema": 1,
            "mode": self.mode,
            "door": "open" if self.door_open else "closed",
            "sharps_bin": "full" if self.bin_full else "ok",
            "temperature_c": self.hw.temperature_c(),
            "faults": self.faults(),
            "version": controller.__version__,
            "uptime_s": int(self.clock.monotonic() - self.started_mono),
            "clock_synced": self.clock.synced(),
            "ts": iso(self.clock.now()),
        }

    def stock_report(self) -> dict:
        return {"schema": 1, "ts": iso(self.clock.now()),
                **stock.stock_report(self.slots.values(), self.products)}

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
                current.product, current.capacity, current.low_at = (
                    cfg.product, cfg.capacity, cfg.low_at)
                current.count = min(current.count, cfg.capacity)
            self.slots[number] = current
            self.ledger.save_slot(current, config_sig=sig)

"""Changes to the ledger, written now or, while the card fails, kept in order until it works.

Access first: a full or failing SD card must not stop a client getting a pack, so the
machine never waits for storage. Each change is a function run inside one transaction;
while writing fails, changes queue in memory, in order, and are written as soon as a
write succeeds again. The machine, the staff commands and the hub link all write
through one :class:`WriteBehind`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from controller.clock import Clock
from controller.ledger import Ledger, StorageError

Change = Callable[[datetime], Any]


class WriteBehind:
    """Writes ``change`` functions to ``ledger`` in order.

    ``on_fault(fault, was)`` is called when writing starts failing (``fault`` the error's
    text) and when it works again (``fault`` None, ``was`` what failed), once each way.
    """

    def __init__(self, ledger: Ledger, clock: Clock,
                 on_fault: Callable[[str | None, str | None], None] = lambda fault, was: None
                 ) -> None:
        self.ledger, self.clock, self.on_fault = ledger, clock, on_fault
        self.fault: str | None = None
        self._waiting: list[Change] = []

    @property
    def pending(self) -> int:
        """Changes kept in memory, waiting for the card."""
        return len(self._waiting)

    def write(self, change: Change) -> bool:
        """Write ``change`` now, after any still waiting; True if nothing waits any more."""
        self._waiting.append(change)
        return self.flush()

    def flush(self) -> bool:
        """Write what waits, oldest first; True if all of it is on the card now."""
        while self._waiting:
            try:
                with self.ledger.transaction():
                    self._waiting[0](self.clock.now())
            except StorageError as e:
                self.failed(e)
                return False
            self._waiting.pop(0)
        if self.fault is not None:
            was, self.fault = self.fault, None
            self.on_fault(None, was)
        return True

    def failed(self, error: Exception) -> None:
        """Writing failed (here, or in a write made directly, such as a vend's journal)."""
        first = self.fault is None
        self.fault = str(error)
        if first:
            self.on_fault(self.fault, None)

    def now_or_never(self, change: Change) -> Any:
        """Run ``change`` in one transaction now, behind nothing: for a staff change, which
        is refused rather than kept if it cannot be saved. Raises :class:`StorageError`."""
        if not self.flush():
            raise StorageError(self.fault or "earlier changes are not saved yet")
        try:
            with self.ledger.transaction():
                return change(self.clock.now())
        except StorageError as e:
            self.failed(e)
            raise

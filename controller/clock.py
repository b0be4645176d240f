"""Time for the controller: wall clock, monotonic clock, and whether the wall clock is known good.

The Pi has no real-time clock, so the wall clock may be wrong until NTP has
synchronised it; :class:`SystemClock` asks the kernel, and :class:`FakeClock`
lets tests move time by hand.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"
TIMESYNCD_FLAG = "/run/systemd/timesync/synchronized"


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall-clock time, UTC, timezone-aware."""
        ...

    def monotonic(self) -> float:
        """Seconds that only ever go forward, for durations."""
        ...

    def synced(self) -> bool:
        """Whether the wall clock is known to be right (NTP synchronised)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clocks of this machine."""

    def __init__(self) -> None:
        self._adjtimex = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            self._adjtimex = libc.adjtimex
        except (OSError, AttributeError):
            pass

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def synced(self) -> bool:
        if os.path.exists(TIMESYNCD_FLAG):
            return True
        if self._adjtimex is None:
            return False
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = self._adjtimex(buf)
        return 0 <= state != TIME_ERROR


class FakeClock:
    """A clock that moves only when told to; ``sleep`` advances it."""

    def __init__(self, start: datetime | None = None, synced: bool = True) -> None:
        self._now = start or datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
        self._mono = 1000.0
        self.is_synced = synced

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def synced(self) -> bool:
        return self.is_synced

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on both clocks."""
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def jump(self, to: datetime, synced: bool | None = None) -> None:
        """Set the wall clock only (as NTP does at boot); the monotonic clock is untouched."""
        self._now = to
        if synced is not None:
            self.is_synced = synced


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with ``Z``, to the second, as in every payload."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 time; a time without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

"""Logging to stderr in a form the systemd journal understands (``<N>`` priority prefixes)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<6>controller.vending: message`` under systemd, a plain line elsewhere."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(name)s: %(message)s" if journal
                         else "%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{text}"
        return text


class Repeats(logging.Filter):
    """At most :attr:`burst` warnings or errors of one kind (logger and message template) a
    minute; the rest are counted, and the next one written says how many were not. A flood
    (a full file table, a broker refusing us in a loop) then costs a few lines, not the disk."""

    def __init__(self, burst: int = 10, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst, self.window_s = burst, window_s
        self._seen: dict[tuple[str, object], list] = {}  # key -> [window start, written, held]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg if isinstance(record.msg, str) else type(record.msg))
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10000:
                self._seen.clear()
            seen = self._seen.setdefault(key, [now, 0, 0])
            if now - seen[0] >= self.window_s:
                held = seen[2]
                seen[:] = [now, 0, 0]
                if held:
                    record.msg = f"{record.msg} ({held} more like this in the last minute " \
                                 "were not written)"
            if seen[1] >= self.burst:
                seen[2] += 1
                return False
            seen[1] += 1
            return True


def setup(level: str | int = "INFO") -> None:
    """Send log records to stderr, one line each, with journal priorities under systemd;
    repeated warnings and errors at most ten a minute each (:class:`Repeats`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(journal="JOURNAL_STREAM" in os.environ))
    handler.addFilter(Repeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("NSPVEND_LOG_LEVEL", level))

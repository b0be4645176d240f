"""Logging to stderr in a form the systemd journal understands (``<N>`` priority prefixes)."""

from __future__ import annotations

import logging
import os
import sys

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


def setup(level: str | int = "INFO") -> None:
    """Send log records to stderr, one line each, with journal priorities under systemd."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(journal="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("NSPVEND_LOG_LEVEL", level))

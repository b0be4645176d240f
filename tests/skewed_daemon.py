"""``nspvend run`` with a wall clock that jumps as a Pi's does when NTP first sets it.

The campaign (tests/test_campaign.py) runs the daemon through this file: the seconds
in the file named by ``$NSPVEND_TEST_CLOCK_SKEW_FILE`` are added to the wall clock.
The hook lives here, in the tests, not in the daemon a machine runs.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

from controller import cli, clock

SKEW_FILE = os.environ["NSPVEND_TEST_CLOCK_SKEW_FILE"]
_last = [0.0, -1.0]  # seconds, the file's mtime when read


def skew() -> float:
    try:
        mtime = os.stat(SKEW_FILE).st_mtime
        if mtime != _last[1]:
            with open(SKEW_FILE) as f:
                _last[:] = [float(f.read().strip() or 0), mtime]
    except (OSError, ValueError):
        pass
    return _last[0]


real_now = clock.SystemClock.now


def skewed_now(self: clock.SystemClock) -> datetime:
    return real_now(self) + timedelta(seconds=skew())


clock.SystemClock.now = skewed_now

if __name__ == "__main__":
    sys.exit(cli.main(["run", *sys.argv[1:]]))

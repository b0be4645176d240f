"""``nspvend run`` with usage buckets of ``$NSPVEND_TEST_BUCKET_S`` seconds, not minutes.

What a vend causes is told when its bucket closes, and a machine's shortest bucket is a
minute: tests of the whole service that would wait a minute for every jam run the daemon
through this file instead. The hook lives here, in the tests, not in the daemon a
machine runs.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from controller import cli
from controller.vending import VendingMachine

SECONDS = float(os.environ["NSPVEND_TEST_BUCKET_S"])


def short(self: VendingMachine) -> timedelta:
    return timedelta(seconds=SECONDS)


VendingMachine._bucket_length = short

if __name__ == "__main__":
    sys.exit(cli.main(["run", *sys.argv[1:]]))

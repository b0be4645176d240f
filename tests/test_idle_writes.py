"""SD-card wear: an idle machine writes nothing but the closing of each usage bucket."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from controller.clock import FakeClock
from tests.conftest import Rig, make_config
from tests.daemon_process import DaemonProcess
from tests.test_daemon_cli import CONFIG


def files_state(db: str) -> dict:
    state = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(db + suffix)
        if path.exists():
            st = path.stat()
            state[suffix or "db"] = (st.st_size, st.st_mtime_ns)
    return state


def test_an_idle_hour_of_ticks_writes_only_the_bucket_close(tmp_path):
    clock = FakeClock(datetime(2026, 11, 25, 2, 0, 1, tzinfo=UTC))
    rig = Rig(make_config(tmp_path), clock)
    rig.fill_all()
    rig.press(1)
    rig.tick(30)  # the thank-you screen ends
    db = rig.config.database_path
    before, changes = files_state(db), rig.ledger.db.conn.total_changes
    for _ in range(3500):  # nearly an hour, one tick a second
        rig.tick(1)
    assert files_state(db) == before
    assert rig.ledger.db.conn.total_changes == changes
    for _ in range(100):  # past the hour: the bucket closes, once
        rig.tick(1)
    assert files_state(db) != before
    closing = rig.ledger.db.conn.total_changes - changes
    assert 0 < closing <= 3  # finish bucket, queue its usage message, open the next


def test_the_idle_daemon_process_writes_nothing(tmp_path):
    config = tmp_path / "nspvend.toml"
    config.write_text(CONFIG)
    daemon = DaemonProcess(config)
    try:
        db = str(tmp_path / "data" / "nspvend.db")
        io_path = f"/proc/{daemon.proc.pid}/io"

        def written() -> int:
            fields = dict(line.split(": ") for line in Path(io_path).read_text().splitlines())
            return int(fields["wchar"])

        before_files, before_io = files_state(db), written()
        time.sleep(3.5)  # idle time itself is what is measured: three ticks of the core loop
        assert files_state(db) == before_files
        assert written() == before_io
    finally:
        assert daemon.terminate() == 0
        assert os.path.exists(tmp_path / "data" / "nspvend.db")

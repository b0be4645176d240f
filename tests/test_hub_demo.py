"""scripts/hub-demo as a new user meets it: the hub comes up with three machines, and an
alert raised on one of them arrives at the demo's own catcher and is printed."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.broker import MOSQUITTO
from tests.daemon_process import ask
from tests.hub_client import HubClient
from tests.test_hub import free_port

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")


def test_the_demo_prints_the_alerts_its_hub_sends(tmp_path):
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "hub.demo", "--port", str(port), "--days", "1",
                             "--data", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout], daemon=True).start()

    def line_with(text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"the demo never printed {text!r}; it printed:\n{''.join(seen)}")

    try:
        line_with(f"The hub: http://127.0.0.1:{port}/", 120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as page:
            assert page.status == 200
        staff = HubClient(f"http://127.0.0.1:{port}")
        staff.login("demo", "demo password")
        channels = {row["channel"] for row in staff.csv(
            "/reports/usage.csv?from=2000-01-01&to=2100-01-01")}
        assert {"counter", "van", "machine:mare-street"} <= channels, channels
        _, _, page = staff.get("/reports")
        assert "A person a year" in page and "made up for the demo" in page
        assert ask(tmp_path / "mare-street" / "sim.sock", {"op": "door", "open": True})["ok"]
        line = line_with("hub-demo: alert raised: Mare Street, outside the Hub: Door open", 60)
        assert "not serving" in line
    finally:
        demo.send_signal(signal.SIGTERM)  # as kill does: the demo stops what it started
        assert demo.wait(60) == 0
    assert not [p for p in Path("/proc").glob("[0-9]*") if _runs_from(p, tmp_path)]


def _runs_from(process: Path, folder: Path) -> bool:
    try:
        return str(folder) in (process / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_the_demo_says_when_its_hub_cannot_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "hub.demo", "--port", str(port), "--days",
                               "1", "--data", str(tmp_path)], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"hub-demo: port {port} is taken (")
    assert done.stderr.count("\n") == 1  # one line, no traceback
    assert not [p for p in Path("/proc").glob("[0-9]*") if _runs_from(p, tmp_path)]

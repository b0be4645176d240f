"""The appliance: the unit file, the notify protocol and watchdog, SIGTERM, the installer."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon_process import ROOT, BoardProcess, DaemonProcess, ask
from tests.test_daemon_cli import CONFIG as SIM_CONFIG
from tests.test_serial_daemon import CONFIG as SERIAL_CONFIG

UNIT = ROOT / "systemd" / "nspvend.service"
ANALYZE = shutil.which("systemd-analyze")


HUB_UNIT = ROOT / "systemd" / "nspvend-hub.service"
HUB_INSTANCE = ROOT / "systemd" / "nspvend-hub@.service"  # verified as its instance 1


def local_unit(tmp: Path, unit: Path = UNIT) -> Path:
    """The unit with ExecStart pointing at this checkout's nspvend, so verify finds it."""
    path = tmp / unit.name.replace("@.", "@1.")
    nspvend = shutil.which("nspvend", path=str(Path(os.sys.executable).parent)) or "/bin/true"
    path.write_text(unit.read_text().replace("/opt/nspvend/venv/bin/nspvend", nspvend)
                    .replace("/opt/nspvend-hub/venv/bin/nspvend", nspvend))
    return path


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit_file", [UNIT, HUB_UNIT, HUB_INSTANCE],
                         ids=["machine", "hub", "hub-instance"])
def test_the_unit_verifies_and_its_exposure_is_ok(tmp_path, capsys, unit_file):
    unit = local_unit(tmp_path, unit_file)
    verify = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0 and "nspvend" not in verify.stderr, verify.stderr
    security = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True, timeout=60)
    found = re.search(rf"Overall exposure level for {re.escape(unit.name)}: ([\d.]+) (\w+)",
                      security.stdout)
    assert found, security.stdout[-500:]
    with capsys.disabled():
        print(f"\n    systemd-analyze security {unit.name}: exposure {found[1]} {found[2]}")
    assert float(found[1]) <= 2.0


def test_the_unit_asks_for_what_the_issue_requires():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=78",
                 "StartLimitBurst=", "User=nspvend",
                 "StateDirectory=nspvend", "RuntimeDirectory=nspvend", "ProtectSystem=strict",
                 "UMask=0077", "StateDirectoryMode=0700", "TasksMax=", "MemoryMax=",
                 "SupplementaryGroups=gpio dialout nspvend-staff",
                 "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "DevicePolicy=closed",
                 "DeviceAllow=char-gpiochip rw", "DeviceAllow=char-ttyACM rw",
                 "SystemCallFilter=@system-service", "TimeoutStopSec="):
        assert line in text, line


class NotifySocket:
    """What systemd would listen on: a datagram socket the daemon writes its states to."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def next(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except (TimeoutError, BlockingIOError):
            return None

    def close(self) -> None:
        self.sock.close()


def test_ready_then_watchdog_pings_only_while_the_core_loop_turns(tmp_path):
    notify = NotifySocket(tmp_path)
    config = tmp_path / "nspvend.toml"
    # a simulated turn of 2.5 s keeps the core loop busy in one vend: a stand-in for a hang
    config.write_text(SIM_CONFIG.replace('[sim]\ncontrol = "sim.sock"',
                                         '[sim]\ncontrol = "sim.sock"\nmotor_s = 2.5'))
    daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": str(notify.path),
                                        "WATCHDOG_USEC": "300000"})
    try:
        first = notify.next(10)
        assert first is not None and first.startswith("READY=1"), first
        assert (tmp_path / "control.sock").exists()  # ready means serving
        pings = [notify.next(2) for _ in range(4)]
        assert pings == ["WATCHDOG=1"] * 4
        ask(tmp_path / "sim.sock", {"op": "load", "slot": 1, "count": 3})
        ask(tmp_path / "control.sock", {"cmd": "refill", "id": "r", "slot": 1, "count": 3})
        while notify.next(0) is not None:  # what was sent before the press
            pass
        ask(tmp_path / "sim.sock", {"op": "press", "button": 1})
        assert notify.next(0.2) in ("WATCHDOG=1", None)  # at most one already on its way
        assert notify.next(1.5) is None, "pings went on while the core loop was stuck"
        assert notify.next(5) == "WATCHDOG=1"  # the vend is over: the loop turns again
    finally:
        assert daemon.terminate() == 0
    messages = []
    while (m := notify.next(0.5)) is not None:
        messages.append(m)
    assert "STOPPING=1" in messages
    notify.close()


def test_sigterm_in_the_middle_of_a_vend_finishes_it_and_exits_0(tmp_path):
    board = BoardProcess(tmp_path, turn_ms=1500)
    try:
        config = tmp_path / "nspvend.toml"
        config.write_text(SERIAL_CONFIG)
        board.ask({"op": "load", "slot": 1, "count": 5})
        daemon = DaemonProcess(config)
        ask(tmp_path / "control.sock", {"cmd": "refill", "id": "r", "slot": 1, "count": 5})
        board.ask({"op": "press", "button": 1})
        deadline = time.monotonic() + 10
        while not board.ask({"op": "state"})["motor_running"]:
            assert time.monotonic() < deadline, "the motor never started"
            time.sleep(0.01)
        started = time.monotonic()
        code = daemon.terminate(timeout=20)
        took = time.monotonic() - started
        assert code == 0 and took < 20
        state = board.settled()
        assert not state["motor_running"] and state["slots"][0]["packs_dropped"] == 1
        db = sqlite3.connect(tmp_path / "nspvend.db")
        counted = db.execute("SELECT sum(confirmed) FROM bucket_counts").fetchone()[0]
        open_vends = db.execute("SELECT count(*) FROM journal").fetchone()[0]
        db.close()
        assert counted == 1 and open_vends == 0
        assert any("stopped" in line for line in daemon.log)
    finally:
        board.stop()


def test_a_bad_config_exits_78_so_systemd_does_not_restart_it(tmp_path):
    config = tmp_path / "nspvend.toml"
    config.write_text(SIM_CONFIG.replace('machine_id = "e2e-01"', 'machine_id = "Bad Id"'))
    result = subprocess.run([os.sys.executable, "-m", "controller", "run", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 78
    assert len(result.stderr.strip().splitlines()) == 1 and "machine_id" in result.stderr


WHEELHOUSE = ROOT / ".venv" / "wheelhouse"  # scripts/setup fetched the locked packages there


def run_installer(script: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ROOT / "systemd" / script), "--root", str(root)],
                          capture_output=True, text=True, timeout=600, env={
                              **os.environ,
                              "NSPVEND_PIP_OPTIONS": f"--no-index --find-links {WHEELHOUSE}"})


@pytest.mark.skipif(shutil.which("useradd") is None, reason="no useradd")
@pytest.mark.skipif(not WHEELHOUSE.is_dir(), reason="run scripts/setup first: it fetches the "
                                                   "locked packages the installer takes")
def test_install_twice_into_a_throwaway_root_then_uninstall_keeps_the_data(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "gshadow").write_text("root:*::\n")
    first = run_installer("install.sh", root)
    assert first.returncode == 0, first.stderr[-2000:]
    config = root / "etc" / "nspvend" / "config.toml"
    assert config.exists() and "wrote an example" in first.stdout
    config.write_text(config.read_text() + "\n# edited by the hub's staff\n")
    edited = config.read_text()
    second = run_installer("install.sh", root)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "kept the existing" in second.stdout and config.read_text() == edited
    passwd = (root / "etc" / "passwd").read_text()
    assert passwd.count("\nnspvend:") == 1 and "/usr/sbin/nologin" in passwd
    groups = (root / "etc" / "group").read_text()
    assert re.search(r"^gpio:.*nspvend", groups, re.M) and re.search(r"^dialout:.*nspvend",
                                                                      groups, re.M)
    assert re.search(r"^nspvend-staff:", groups, re.M)
    venv_cfg = (root / "opt/nspvend/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in venv_cfg  # nothing from the system
    unit = root / "etc" / "systemd" / "system" / "nspvend.service"
    assert unit.read_text() == UNIT.read_text()
    assert (root / "etc/systemd/system/multi-user.target.wants/nspvend.service").is_symlink()
    installed = subprocess.run([str(root / "opt/nspvend/venv/bin/nspvend"), "check-config",
                                str(ROOT / "simulator" / "demo.toml")],
                               capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, installed.stderr
    data = root / "var" / "lib" / "nspvend"
    data.mkdir(parents=True)
    (data / "nspvend.db").write_text("counts")
    removed = run_installer("uninstall.sh", root)
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists() and not (root / "opt" / "nspvend").exists()
    assert (data / "nspvend.db").read_text() == "counts" and config.read_text() == edited


def test_under_systemd_every_log_line_carries_a_journal_priority(tmp_path):
    config = tmp_path / "nspvend.toml"
    config.write_text(SIM_CONFIG)
    daemon = DaemonProcess(config, env={"JOURNAL_STREAM": "8:12345"}, bucket_s=1)
    try:
        ask(tmp_path / "sim.sock", {"op": "load", "slot": 3, "count": 2})
        ask(tmp_path / "control.sock", {"cmd": "refill", "id": "r", "slot": 3, "count": 2})
        ask(tmp_path / "sim.sock", {"op": "fault", "kind": "jam", "slot": 3})
        ask(tmp_path / "sim.sock", {"op": "press", "button": 2})
        deadline = time.monotonic() + 10  # the jam is told when its (one-second) bucket closes
        while not any("slot 3" in line for line in daemon.log) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert daemon.terminate() == 0
    assert daemon.log and all(re.match(r"<[0-7]>[\w.]+: \S", line) for line in daemon.log), \
        daemon.log
    assert any(line.startswith("<6>controller.daemon: nspvend ready") for line in daemon.log)
    assert any(line.startswith("<4>controller.vending: slot 3 (foil): jam") for line in daemon.log)

"""nspvend's figures: speed and footprint, for the sim and serial backends. Not a test.

    .venv/bin/python bench/run.py            # about four minutes
    .venv/bin/python bench/run.py --quick    # a rough pass in about a minute

Prints one table. Every figure is measured here, on this machine, in this run:

- button to motor: a simulated finger presses a button; the motor of the chosen slot
  starts. sim: measured in the daemon's process (the model reports the motor); serial:
  measured by the board simulator, a separate process, from finger down (through its
  20 ms debounce, the link, the daemon and back) to motor on.
- overhead per vend: the core loop's time for one press (choose, journal commit, count,
  outbox, display) minus the time spent inside the hardware call (motor, link, board).
- outbox drain: queued usage messages published at QoS 1 and deleted after PUBACK, per
  second, next to raw paho-mqtt publishing the same payloads (20 in flight) in this run.
- start-up: process start to systemd's READY=1 (NOTIFY_SOCKET), median of runs.
- resident memory: VmRSS of the daemon after start-up and a run of vends.
- bytes written: what the daemon process sent to storage (/proc/PID/io write_bytes; the
  serial link's bytes are not in it) per vend, and while idle (with one-minute buckets,
  so that an idle stretch includes bucket closings; an idle hour with the default hourly
  buckets writes one closing and, as tests/test_idle_writes.py shows, nothing else).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.config import load_config  # noqa: E402
from controller.daemon import Daemon  # noqa: E402
from hal import ButtonPressed  # noqa: E402
from tests.broker import MOSQUITTO, Broker  # noqa: E402
from tests.daemon_process import BoardProcess, ask  # noqa: E402
from tests.machines import write_machine  # noqa: E402


def write_config(folder: Path, hal: str, bucket_minutes: int = 60, mqtt: dict | None = None
                 ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tables: dict = {"serial": {"port": "board.tty"}, "sim": {"control": "sim.sock"} if hal == "sim"
                    else {}, "database": {"path": "nspvend.db"}, "control": {"socket": "control.sock"},
                    "usage": {"bucket_minutes": bucket_minutes}}
    if mqtt:
        tables["mqtt"] = mqtt
    return write_machine(folder, "bench-01", hal, capacity=1000, **tables)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# -- in the daemon's own process: latency and overhead -------------------------------------
def vend_timings(backend: str, presses: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"nspvend-bench-{backend}-"))
    board = BoardProcess(folder) if backend == "serial" else None
    config = load_config(write_config(folder, backend))
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    daemon.ready.wait(30)
    hw = daemon.hardware
    for slot in (1, 2, 3):
        if board:
            board.ask({"op": "load", "slot": slot, "count": 1000})
        else:
            hw.model.load(slot, 1000)
        daemon.ask({"id": f"r{slot}", "cmd": "refill", "slot": slot, "count": 1000})

    inside: list[float] = []
    handled: list[float] = []
    real_vend = hw.dispenser.vend

    def timed_vend(slot: int, seq: int):  # noqa: ANN202
        t = time.perf_counter()
        try:
            return real_vend(slot, seq)
        finally:
            inside.append(time.perf_counter() - t)

    hw.dispenser.vend = timed_vend
    real_handle = daemon.machine.handle

    def timed_handle(event):  # noqa: ANN001, ANN202
        if not isinstance(event, ButtonPressed):
            return real_handle(event)
        before = len(inside)
        t = time.perf_counter()
        try:
            return real_handle(event)
        finally:
            total = time.perf_counter() - t
            handled.append(total - sum(inside[before:]))

    daemon.machine.handle = timed_handle
    latencies: list[float] = []
    motor_on = threading.Event()
    pressed_at = [0.0]
    if board is None:
        def on_model(kind: str, detail: dict) -> None:
            if kind == "motor" and detail.get("on"):
                latencies.append(time.perf_counter() - pressed_at[0])
                motor_on.set()
        hw.model.subscribe(on_model)
    for i in range(presses):
        button = 1 + i % 2
        motor_on.clear()
        pressed_at[0] = time.perf_counter()
        if board:
            board.ask({"op": "press", "button": button})
        else:
            hw.press(button)
        daemon.ask({"id": f"sync{i}", "cmd": "stock"})  # queued behind the vend
        if board:
            time.sleep(0.16)  # the finger lets go (150 ms) before the next press
    if board:
        latencies = [ms / 1000 for ms in board.ask({"op": "state"})["press_to_motor_ms"]]
    board_vend = statistics.median(inside) if inside else float("nan")
    daemon.stop()
    thread.join(30)
    if board:
        board.stop()
    shutil.rmtree(folder, ignore_errors=True)
    return {"latency_p50": pct(latencies, 50), "latency_p99": pct(latencies, 99),
            "overhead_p50": pct(handled, 50), "overhead_p99": pct(handled, 99),
            "hardware_call": board_vend, "vends": len(handled)}


# -- as systemd runs it: start-up, memory, bytes written ------------------------------------
class Notify:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(30)

    def wait_ready(self) -> None:
        while not self.sock.recv(4096).startswith(b"READY=1"):
            pass


def proc_io(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def process_figures(backend: str, starts: int, presses: int, idle_s: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"nspvend-bench-{backend}-p-"))
    board = BoardProcess(folder) if backend == "serial" else None
    config = write_config(folder, backend, bucket_minutes=1)
    start_times = []
    env = {**os.environ, "NSPVEND_LOG_LEVEL": "WARNING"}
    for i in range(starts + 1):
        (folder / f"n{i}").mkdir()
        notify = Notify(folder / f"n{i}")
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "controller", "run", "--config", str(config)],
                                cwd=ROOT, env={**env, "NOTIFY_SOCKET": str(notify.path)},
                                stderr=subprocess.DEVNULL)
        notify.wait_ready()
        start_times.append(time.perf_counter() - t)
        if i < starts:
            proc.terminate()
            proc.wait(30)
    # the last one keeps running: vends, then idle
    sim = board.ask if board else (lambda r: ask(folder / "sim.sock", r))
    for slot in (1, 2, 3):
        sim({"op": "load", "slot": slot, "count": 1000})
        ask(folder / "control.sock", {"id": f"r{slot}", "cmd": "refill", "slot": slot, "count": 1000})
    ask(folder / "control.sock", {"id": "sync-0", "cmd": "stock"})
    before = proc_io(proc.pid)
    for i in range(presses):
        sim({"op": "press", "button": 1 + i % 2})
        ask(folder / "control.sock", {"id": f"sync{i}", "cmd": "stock"})
        if board:
            time.sleep(0.16)
    after = proc_io(proc.pid)
    rss = rss_kb(proc.pid)
    db = sqlite3.connect(folder / "nspvend.db")
    buckets_before = db.execute("SELECT count(*) FROM buckets").fetchone()[0]
    idle_start = proc_io(proc.pid)
    time.sleep(idle_s)
    idle_end = proc_io(proc.pid)
    buckets_after = db.execute("SELECT count(*) FROM buckets").fetchone()[0]
    db.close()
    proc.terminate()
    proc.wait(30)
    if board:
        board.stop()
    shutil.rmtree(folder, ignore_errors=True)
    closes = buckets_after - buckets_before
    key = "write_bytes" if after["write_bytes"] > before["write_bytes"] else "wchar"
    idle_bytes = idle_end[key] - idle_start[key]
    return {"startup_p50": statistics.median(start_times[1:] or start_times),
            "rss_mb": rss / 1024,
            "bytes_per_vend": (after[key] - before[key]) / presses, "counter": key,
            "idle_bytes": idle_bytes, "idle_s": idle_s, "idle_bucket_closes": closes,
            # hourly buckets: an idle hour writes one bucket closing and (the idle-writes
            # test shows) nothing else
            "idle_hour_bytes": idle_bytes / closes if closes else None}


# -- the outbox against raw paho --------------------------------------------------------------
def drain_figures(messages: int) -> dict:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from controller.ledger import Ledger

    folder = Path(tempfile.mkdtemp(prefix="nspvend-bench-drain-"))
    broker = Broker(folder / "broker", extra="log_type error\n")
    config_path = write_config(folder, "sim", mqtt={"host": "127.0.0.1", "port": broker.port})
    config = load_config(config_path)
    ledger = Ledger(config.database_path, config.machine_id)
    payloads = []
    with ledger.transaction():
        for i in range(messages):
            payload = {"schema": 1, "id": f"bench-{i:06d}", "start": "2026-11-25T00:00:00Z",
                       "end": "2026-11-25T01:00:00Z", "counts": {"syringe-1ml": i % 7},
                       "unconfirmed": {}, "clock_synced": True}
            ledger.enqueue("usage", payload["id"], payload)
            payloads.append(payload)
    ledger.close()
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    daemon.ready.wait(30)
    t = time.perf_counter()  # from ready: it connects, then drains
    while daemon.ask({"id": f"o{time.perf_counter()}", "cmd": "status"})["result"]["outbox"]:
        time.sleep(0.01)
    nspvend_s = time.perf_counter() - t
    daemon.stop()
    thread.join(30)

    import json
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason, props):  # noqa: ANN001, ANN202
        acked[0] += 1
        if acked[0] == messages:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(20)
    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    t = time.perf_counter()
    for p in payloads:
        client.publish("nspvend/bench-raw/usage", json.dumps(p, separators=(",", ":")), qos=1)
    done.wait(120)
    raw_s = time.perf_counter() - t
    client.disconnect()
    client.loop_stop()
    broker.kill()
    shutil.rmtree(folder, ignore_errors=True)
    return {"nspvend_rate": messages / nspvend_s, "raw_rate": messages / raw_s,
            "ratio": (messages / nspvend_s) / (messages / raw_s), "messages": messages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer vends, shorter idle")
    args = parser.parse_args()
    presses = 40 if args.quick else 200
    idle_s = 65.0 if not args.quick else 20.0
    starts = 3 if args.quick else 7
    rows = []
    for backend in ("sim", "serial"):
        v = vend_timings(backend, presses)
        p = process_figures(backend, starts, presses // 4, idle_s)
        rows.append((backend, v, p))
    d = drain_figures(500 if args.quick else 3000) if MOSQUITTO else None

    def ms(x: float) -> str:
        return f"{x * 1000:.1f} ms"

    print(f"nspvend bench on {os.uname().nodename} ({os.cpu_count()} CPUs), "
          f"python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")
    print()
    print(f"| {'figure':<44} | {'sim':>16} | {'serial':>16} |")
    print(f"|{'-' * 46}|{'-' * 18}|{'-' * 18}|")

    def row(name: str, values: list[str]) -> None:
        print(f"| {name:<44} | {values[0]:>16} | {values[1]:>16} |")

    row("button to motor, p50", [ms(v["latency_p50"]) for _, v, _ in rows])
    row("button to motor, p99", [ms(v["latency_p99"]) for _, v, _ in rows])
    row("controller overhead per vend, p50", [ms(v["overhead_p50"]) for _, v, _ in rows])
    row("controller overhead per vend, p99", [ms(v["overhead_p99"]) for _, v, _ in rows])
    row("hardware call per vend (motor+link), p50", [ms(v["hardware_call"]) for _, v, _ in rows])
    row("start-up to READY=1, median", [ms(p["startup_p50"]) for _, _, p in rows])
    row("resident memory after vends", [f"{p['rss_mb']:.1f} MB" for _, _, p in rows])
    row("bytes written per vend", [f"{p['bytes_per_vend']:.0f} B" for _, _, p in rows])
    row("bytes written per idle hour (hourly buckets)",
        [f"{p['idle_hour_bytes']:.0f} B" if p["idle_hour_bytes"] is not None
         else "n/a: no closing" for _, _, p in rows])
    print()
    print(f"bytes counted with /proc/PID/io {rows[0][2]['counter']}")
    print(f"vends timed: {rows[0][1]['vends']} (sim), {rows[1][1]['vends']} (serial); idle measured "
          f"for {rows[0][2]['idle_s']:.0f} s with one-minute buckets: "
          f"{rows[0][2]['idle_bytes']} B in {rows[0][2]['idle_bucket_closes']} bucket closings (sim)")
    if d:
        print(f"outbox drain to a local mosquitto: {d['nspvend_rate']:.0f} msg/s; raw paho-mqtt "
              f"with the same {d['messages']} payloads: {d['raw_rate']:.0f} msg/s; ratio "
              f"{d['ratio']:.2f}")
    else:
        print("outbox drain: mosquitto not installed, not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``scripts/hub-demo``: the hub with everything it needs, on this machine, in one command.

Starts a private mosquitto on a free port, three machines on the simulator (real daemons)
that clients use now and then, a few months of made-up history (sent as machines send it,
and a counter's and a van's as the tally page sends them, so the reports have something to
show), and the hub on 127.0.0.1 with a demo login; prints
the address and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hub.tally import KEEP_DAYS

MACHINES = [("mare-street", "Mare Street, outside the Hub", 1.0),
            ("dalston-lane", "Dalston Lane pharmacy", 0.6),
            ("homerton-row", "Homerton Row clinic", 0.3)]
PRODUCTS = [("syringe-1ml", "1ml syringes x10", 1, 3.0), ("foil", "foil", 2, 2.0),
            ("citric", "citric", 3, 1.0), ("naloxone", "naloxone kit", 4, 0.2)]
LOGIN = ("demo", "demo password")
AREAS = ("Hackney Central", "Dalston", "Homerton")
ALERT_TYPES = ["offline", "jam", "empty", "low_stock", "sharps_bin_full", "door_open", "silence",
               "storage_fault", "board_fault"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def machine_config(machine_id: str, port: int) -> str:
    lines = [f'machine_id = "{machine_id}"', 'hal = "sim"', "", "[sim]", 'control = "sim.sock"',
             "motor_s = 0.3", "", "[database]", 'path = "nspvend.db"', "", "[control]",
             'socket = "control.sock"', "", "[mqtt]", 'host = "127.0.0.1"', f"port = {port}",
             "state_interval_s = 30", "", "[usage]", "bucket_minutes = 5", "",
             "[display]", 'messages = ["Naloxone saves lives: press 4 for a kit."]']
    for product, name, button, _ in PRODUCTS:
        lines += ["", "[[products]]", f'id = "{product}"', f'name = "{name}"', f"button = {button}"]
        if product == "naloxone":
            lines.append("shelf_life_months = 24")  # the hub suggests its date at refill
    for slot, (product, _, _, _) in enumerate(PRODUCTS, start=1):
        lines += ["", "[[slots]]", f"slot = {slot}", f'product = "{product}"', "capacity = 30",
                  "low_at = 6"]
    return "\n".join(lines) + "\n"


class AlertCatcher:
    """Where the demo hub's alerts go (a webhook route): each is printed as it arrives, so a
    new user sees alerts come and go."""

    def __init__(self) -> None:

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                self.send_response(204)
                self.end_headers()
                try:
                    alert = json.loads(body)
                except ValueError:
                    return
                print(f"hub-demo: alert {alert.get('state')}: {alert.get('name')}: "
                          f"{alert.get('detail')}", flush=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def history(port: int, days: int) -> None:
    """Hourly buckets for the last ``days`` days, as each machine would have sent them."""
    rng = random.Random(7)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for machine_id, _, busy in MACHINES:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-history-{machine_id}")
        client.connect("127.0.0.1", port)
        client.loop_start()
        start = now - timedelta(days=days)
        hour = start
        sent = []
        while hour < now - timedelta(hours=1):
            if machine_id == "homerton-row" and start + timedelta(days=20) <= hour < start + timedelta(
                    days=24):
                hour += timedelta(hours=1)  # four days when nothing was heard: a gap
                continue
            night = hour.hour >= 18 or hour.hour < 8
            counts = {p: rng.choices(range(5), weights=(8, 3, 2, 1, 1))[0]
                      if rng.random() < busy * weight * (0.5 if night else 0.15) / 3 else 0
                      for p, _, _, weight in PRODUCTS}
            payload = {"schema": 1, "id": uuid.uuid4().hex, "start": hour.strftime(
                "%Y-%m-%dT%H:%M:%SZ"), "end": (hour + timedelta(hours=1)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"), "counts": counts, "unconfirmed": dict.fromkeys(counts, 0),
                "clock_synced": True}
            sent.append(client.publish(f"nspvend/{machine_id}/usage", json.dumps(payload), qos=1))
            hour += timedelta(hours=1)
        for info in sent:
            info.wait_for_publish(30)
        client.disconnect()
        client.loop_stop()


def tallies(base: str, days: int) -> int:
    """Made-up months at the counter (weekdays 10:00-17:00) and from the van (Tuesday,
    Thursday and Saturday evenings), sent as the tally page sends them: logged in as the
    demo's staff, hourly buckets to ``POST /tally``. Returns the packs sent."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/login", timeout=30).read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    form = urllib.parse.urlencode({"username": LOGIN[0], "password": LOGIN[1], "csrf": csrf})
    opener.open(f"{base}/login", form.encode(), timeout=30)
    rng = random.Random(11)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # a fortnight at least, so both are in it; at most what the hub takes from a phone
    hour, buckets, packs = now - timedelta(days=min(max(days, 14), KEEP_DAYS - 1)), [], 0
    while hour < now - timedelta(hours=1):
        weekday, h = hour.weekday(), hour.hour  # UTC hours: near enough for made-up data
        channel = ("counter" if weekday < 5 and 10 <= h < 17 else
                   "van" if weekday in (1, 3, 5) and 18 <= h < 22 else None)
        if channel:
            busy = 2.5 if channel == "counter" else 4.0
            counts = {p: max(0, round(rng.gauss(busy * weight / 2, 1.5)))
                      for p, _, _, weight in PRODUCTS}
            packs += sum(counts.values())
            buckets.append({"id": uuid.uuid4().hex, "channel": channel,
                            "start": hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "end": (hour + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "counts": counts, "version": 1})
        hour += timedelta(hours=1)
    for i in range(0, len(buckets), 200):
        request = urllib.request.Request(f"{base}/tally", json.dumps(
            {"buckets": buckets[i:i + 200]}).encode(), {"Content-Type": "application/json"})
        answer = json.loads(opener.open(request, timeout=60).read())
        if not answer["ok"]:
            raise RuntimeError(f"the hub refused a made-up tally: {answer}")
    return packs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/hub-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="the web page's port (8080)")
    parser.add_argument("--days", type=int, default=120, help="days of made-up history (120)")
    parser.add_argument("--data", help="keep everything in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        print("hub-demo: mosquitto is not installed (scripts/setup --with-broker installs it)",
              file=sys.stderr)
        return 69
    try:  # before anything starts: a taken port is said at once
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the hub binds
            probe.bind(("127.0.0.1", args.port))
    except OSError as e:
        print(f"hub-demo: port {args.port} is taken ({e.strerror}): choose another with --port",
              file=sys.stderr)
        return 1
    folder = Path(args.data or tempfile.mkdtemp(prefix="nspvend-hub-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                           "persistence false\nmax_queued_messages 100000\n"
                                           "max_inflight_messages 200\n")
    processes: list[subprocess.Popen] = []

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # kill (SIGTERM) stops the machines, the hub and the broker too

    signal.signal(signal.SIGTERM, stop)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        processes.append(subprocess.Popen([mosquitto, "-c", str(folder / "mosquitto.conf")],
                                          **quiet))
        time.sleep(0.5)
        hub_toml = folder / "hub.toml"
        machines = "".join(f'\n[[machines]]\nid = "{m}"\nname = "{n}"\narea = "{a}"\n'
                           for (m, n, _), a in zip(MACHINES, AREAS, strict=True))
        catcher = AlertCatcher()
        hub_toml.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n\n[database]\n'
                            f'path = "hub.db"\n\n[web]\nlisten = "127.0.0.1:{args.port}"\n\n'
                            f"[alerts]\noffline_after_s = 90\nexpiring_days = 45\n\n"
                            f"[[alerts.routes]]\n"
                            f'types = {json.dumps(ALERT_TYPES)}\nwebhook = "{catcher.url}"\n'
                            f'hours = "always"\n\n[reports]\npeople_who_inject = 150\n'
                            f'estimate_source = "made up for the demo"\nestimate_year = 2026\n'
                            f'injections_per_day = 2\n\n[reports.units]\n"syringe-1ml" = 10\n'
                            f'{machines}')
        nspvend = [sys.executable, "-m", "controller"]
        subprocess.run([*nspvend, "hub", "user", "add", LOGIN[0], "--role", "staff", "--config",
                        str(hub_toml)], input=LOGIN[1] + "\n", text=True, check=True, **quiet)
        # the machines first, filled before the hub hears them: it never sees them empty
        for machine_id, _, _ in MACHINES:
            home = folder / machine_id
            home.mkdir(exist_ok=True)
            (home / "nspvend.toml").write_text(machine_config(machine_id, port))
            processes.append(subprocess.Popen([*nspvend, "run", "--config",
                                               str(home / "nspvend.toml")], **quiet))
        for machine_id, _, _ in MACHINES:
            deadline = time.monotonic() + 60
            while not (folder / machine_id / "sim.sock").exists():
                if time.monotonic() > deadline:
                    print(f"hub-demo: {machine_id} did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            for slot in range(1, len(PRODUCTS) + 1):
                world(folder / machine_id, {"op": "load", "slot": slot, "count": 24})
            staff(folder / machine_id, {"id": "fill", "cmd": "refill", "all": True})
        # naloxone with dates: Mare Street's expire at the end of this month (near its
        # date), Dalston Lane's at the end of last month (past it: the board says both)
        today = datetime.now(UTC).date()
        last_month = today.replace(day=1) - timedelta(days=1)
        for machine_id, month in (("mare-street", today), ("dalston-lane", last_month)):
            staff(folder / machine_id, {"id": "dates", "cmd": "refill", "slot": 4, "count": 24,
                                        "expiry": f"{month:%Y-%m}"})
        hub = subprocess.Popen([*nspvend, "hub", "run", "--config", str(hub_toml)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        processes.append(hub)
        said = []
        for line in hub.stderr:  # ready: subscribed, so nothing sent from now on is missed
            if "nspvend hub ready" in line:
                break
            said.append(line)
        else:
            print(f"hub-demo: the hub did not start (is port {args.port} taken? --port):\n"
                  + "".join(said[-5:]), file=sys.stderr)
            return 1
        threading.Thread(target=lambda: [None for _ in hub.stderr], daemon=True).start()
        print("hub-demo: sending the made-up history...", flush=True)
        history(port, args.days)
        tallies(f"http://127.0.0.1:{args.port}", args.days)
        print(f"\nThe hub: http://127.0.0.1:{args.port}/   log in as {LOGIN[0]} / {LOGIN[1]}\n"
              f"Three machines on the simulator; clients come by now and then, and a slot "
              f"jams now and again: its alert is printed here as the hub sends it. Ctrl-C stops "
              f"it all. (Files: {folder})", flush=True)
        clients(folder)
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


def clients(folder: Path) -> None:
    """People using the machines, now and then; sometimes a slot jams."""
    rng = random.Random()
    while True:
        time.sleep(rng.uniform(2, 8))
        machine_id, _, busy = rng.choice(MACHINES)
        if rng.random() > busy:
            continue
        button = rng.choices([p[2] for p in PRODUCTS], weights=[p[3] for p in PRODUCTS])[0]
        try:
            if rng.random() < 0.02:
                world(folder / machine_id, {"op": "fault", "kind": "jam",
                                            "slot": rng.randint(1, len(PRODUCTS))})
            world(folder / machine_id, {"op": "press", "button": button})
        except OSError:
            pass  # that machine is restarting


def ask(path: Path, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(s.makefile().readline())


def world(home: Path, request: dict) -> dict:
    return ask(home / "sim.sock", request)


def staff(home: Path, request: dict) -> dict:
    return ask(home / "control.sock", request)


if __name__ == "__main__":
    sys.exit(main())

"""The hub with real parts: mosquitto, daemons on the simulator, an SMTP server on loopback
(aiosmtpd) and a webhook receiver. Buckets count once, the CSV equals what the simulators
dropped, an alert is raised once and cleared once."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
import urllib.parse
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.broker import MOSQUITTO, Broker, Subscriber
from tests.daemon_process import DaemonProcess, HubProcess, add_user, ask, hub_cli, wait_until
from tests.hub_client import HubClient
from tests.machines import machine_toml, to_toml

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")

PASSWORDS = {"sam": "staff password 1", "val": "viewer password 1"}
PRODUCT_OF_SLOT = {1: "syringe-1ml", 2: "syringe-1ml", 3: "foil"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """A broker, the hub as a process with two users, and machines on the simulator."""

    def __init__(self, tmp: Path, alerts: dict | None = None,
                 keys: dict[str, str] | None = None, web: dict | None = None,
                 machines: tuple[str, ...] = (), reports: dict | None = None,
                 tally: dict | None = None) -> None:
        """``machines``: ids the hub knows besides hub-a and hub-b."""
        """``keys``: the command key the hub signs each machine's commands with, by id."""
        self.tmp = tmp
        self.broker = Broker(tmp / "broker")
        self.web_port = free_port()
        config = {"mqtt": {"host": "127.0.0.1", "port": self.broker.port},
                  "database": {"path": "hub.db"},
                  "web": {"listen": f"127.0.0.1:{self.web_port}", **(web or {})},
                  # machines say their state every 10 s here: 12 s without a word is offline
                  "alerts": {"offline_after_s": 12, **(alerts or {})},
                  "machines": [{"id": "hub-a", "name": "Mare Street"},
                               {"id": "hub-b", "name": "Dalston Lane"},
                               *({"id": m, "name": m} for m in machines)],
                  **({"reports": reports} if reports else {}),
                  **({"tally": tally} if tally else {})}
        for machine in config["machines"]:
            if keys and machine["id"] in keys:
                key_file = tmp / f"{machine['id']}.key"
                key_file.write_text(keys[machine["id"]] + "\n")
                machine["command_key_file"] = str(key_file)
        self.config = tmp / "hub.toml"
        self.config.write_text(to_toml(config))
        for name, role in (("sam", "staff"), ("val", "viewer")):
            add_user(self.config, name, role, PASSWORDS[name])
        self.process = HubProcess(self.config)
        self.machines: dict[str, DaemonProcess] = {}

    def client(self, name: str) -> HubClient:
        client = HubClient(f"http://127.0.0.1:{self.web_port}")
        status, url, _ = client.login(name, PASSWORDS[name])
        assert status == 200 and not url.endswith("/login"), (status, url)
        return client

    def start_machine(self, machine_id: str, bucket_s: float = 3,
                      key: str | None = None) -> DaemonProcess:
        """A machine whose buckets last ``bucket_s`` seconds (tests/short_buckets.py): what a
        press causes reaches the hub when its bucket closes, within seconds here. With
        ``key``, it takes only commands signed with it."""
        folder = self.tmp / machine_id
        folder.mkdir(exist_ok=True)
        path = folder / "nspvend.toml"
        if not path.exists():
            mqtt = {"host": "127.0.0.1", "port": self.broker.port, "state_interval_s": 10}
            if key is not None:
                (folder / "command.key").write_text(key + "\n")
                mqtt["command_key_file"] = str(folder / "command.key")
            path.write_text(machine_toml(
                machine_id, "sim", sim={"control": "sim.sock"}, database={"path": "nspvend.db"},
                control={"socket": "control.sock"}, mqtt=mqtt))
        daemon = DaemonProcess(path, bucket_s=bucket_s)
        self.machines[machine_id] = daemon
        return daemon

    def world(self, machine_id: str, request: dict) -> dict:
        answer = ask(self.tmp / machine_id / "sim.sock", request)
        assert answer["ok"], answer
        return answer

    def fill(self, machine_id: str) -> None:
        for slot, count in ((1, 20), (2, 20), (3, 10)):
            self.world(machine_id, {"op": "load", "slot": slot, "count": count})
        assert ask(self.tmp / machine_id / "control.sock",
                   {"id": "fill", "cmd": "refill", "all": True})["ok"]

    def dropped(self, machine_id: str) -> dict[str, int]:
        truth: dict[str, int] = {}
        for s in self.world(machine_id, {"op": "state"})["slots"]:
            product = PRODUCT_OF_SLOT[s["slot"]]
            truth[product] = truth.get(product, 0) + s["packs_dropped"]
        return {p: n for p, n in truth.items() if n}

    def close(self) -> None:
        for daemon in self.machines.values():
            if daemon.proc.poll() is None:
                daemon.kill()
        if self.process.proc.poll() is None:
            self.process.kill()
        if self.broker.proc.poll() is None:
            self.broker.kill()


def wait(predicate, timeout: float = 30, what: str = "") -> object:
    return wait_until(predicate, what, timeout, every=0.2)


def csv_totals(client: HubClient) -> dict[tuple[str, str], tuple[int, int]]:
    rows = client.csv("/reports/usage.csv?from=2000-01-01&to=2100-01-01")
    return {(r["machine"], r["product"]): (int(r["confirmed"]), int(r["unconfirmed"]))
            for r in rows}


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path)
    yield h
    h.close()


def test_a_bucket_heard_twice_counts_once_and_the_csv_is_what_the_simulators_dropped(hub):
    watcher = Subscriber(hub.broker.port, "nspvend/+/usage")
    a, b = hub.start_machine("hub-a"), hub.start_machine("hub-b")
    for machine in ("hub-a", "hub-b"):
        hub.fill(machine)
    for button in (1, 1, 2, 1):
        hub.world("hub-a", {"op": "press", "button": button})
    for button in (2, 2, 1):
        hub.world("hub-b", {"op": "press", "button": button})
    # the truth lives in each daemon's simulator (a new one at each start): read it before
    # a daemon stops, which closes its bucket and sends it
    want: dict[tuple[str, str], tuple[int, int]] = {}

    def add_truth(machine: str) -> None:
        ask(hub.tmp / machine / "control.sock", {"id": "sync", "cmd": "stock"})
        for product, n in hub.dropped(machine).items():
            want[(machine, product)] = (want.get((machine, product), (0, 0))[0] + n, 0)

    add_truth("hub-a")
    # A bucket whose acknowledgement is lost: the broker is frozen while hub-a stops (the
    # bucket goes out, no PUBACK comes back, so it stays in hub-a's outbox) ...
    os.kill(hub.broker.proc.pid, signal.SIGSTOP)
    try:
        assert a.terminate() == 0
    finally:
        os.kill(hub.broker.proc.pid, signal.SIGCONT)
    # ... and is sent again when hub-a is back.
    a = hub.start_machine("hub-a")
    hub.fill("hub-a")
    hub.world("hub-a", {"op": "press", "button": 2})
    for machine, daemon in (("hub-a", a), ("hub-b", b)):
        add_truth(machine)
        assert daemon.terminate() == 0
    client = hub.client("val")  # a viewer may download
    wait(lambda: csv_totals(client) == want, what=f"the CSV equals {want}")
    ids = [json.loads(p)["id"] for t, p, _ in watcher.messages if t.endswith("/hub-a/usage")]
    assert len(ids) > len(set(ids)), "the test meant a bucket to be heard twice"
    machines = {m["id"]: m for m in client.json("/api/machines")}
    assert set(machines) == {"hub-a", "hub-b"} and machines["hub-a"]["name"] == "Mare Street"
    assert machines["hub-a"]["online"] is False  # both were stopped: offline
    watcher.close()


def test_a_staff_command_reaches_the_machine_and_is_recorded_with_its_answer(hub):
    hub.start_machine("hub-a")
    hub.fill("hub-a")
    staff, viewer = hub.client("sam"), hub.client("val")
    wait(lambda: any(m["id"] == "hub-a" and m["online"] for m in staff.json("/api/machines")),
         what="hub-a online at the hub")
    status, answer = staff.post_json("/api/machines/hub-a/commands",
                                     {"cmd": "refill", "slot": 3, "count": 4})
    assert status == 200 and answer["ok"], answer
    status, answer = staff.post_json("/api/machines/hub-a/commands",
                                     {"cmd": "refill", "slot": 9, "count": 4})
    assert status == 200 and answer["ok"] is False and answer["error"].startswith("slot:")
    status, _ = viewer.post_json("/api/machines/hub-a/commands", {"cmd": "disable", "slot": 1})
    assert status == 403
    local = ask(hub.tmp / "hub-a" / "control.sock", {"id": "s", "cmd": "stock"})["result"]
    assert local["slots"][2]["count"] == 4 and local["slots"][0]["status"] != "disabled"
    db = sqlite3.connect(hub.tmp / "hub.db")
    rows = db.execute("SELECT user, command, ok FROM commands ORDER BY sent").fetchall()
    assert [(u, json.loads(c)["cmd"], ok) for u, c, ok in rows] == [
        ("sam", "refill", 1), ("sam", "refill", 0)]
    assert all("expires" in json.loads(c) for _, c, _ in rows)


def test_without_a_login_pages_redirect_and_programs_get_401(hub):
    anonymous = HubClient(f"http://127.0.0.1:{hub.web_port}")
    status, url, _ = anonymous.get("/picklist")
    assert status == 200 and "/login?next=/picklist" in url
    assert anonymous.get("/api/machines")[0] == 401
    assert anonymous.get("/reports/usage.csv?from=2026-01-01&to=2026-02-01")[0] == 401
    status, _ = anonymous.post_json("/api/machines/hub-a/commands", {"cmd": "status"})
    assert status == 401
    status, url, page = anonymous.login("sam", "not the password")
    assert status == 401 and "do not match" in page


def test_login_attempts_are_slowed_after_failures(hub):
    client = HubClient(f"http://127.0.0.1:{hub.web_port}")
    for _ in range(3):
        assert client.login("sam", "wrong")[0] == 401
    status, _, page = client.login("sam", PASSWORDS["sam"])  # even the right one must wait
    assert status == 429 and "wait" in page
    other = HubClient(f"http://127.0.0.1:{hub.web_port}")
    assert other.login("sam", PASSWORDS["sam"])[0] == 429


def test_a_form_without_the_csrf_token_is_refused_and_a_refill_form_carries_dates(hub):
    hub.start_machine("hub-a")
    staff = hub.client("sam")
    wait(lambda: staff.get("/machines/hub-a")[0] == 200, what="the machine page")
    status, _, _ = staff.request("/machines/hub-a/command", b"action=refill_all",
                                 {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    _, _, page = staff.get("/machines/hub-a")
    status, url, page = staff.post_form("/machines/hub-a/command", page, action="refill_all")
    assert status == 200 and "Done: every slot refilled to capacity." in page
    assert "Done:" not in staff.get("/machines/hub-a")[2]  # said once, not again on reload
    # a slot refilled with the month its packs expire, and packs past their date taken out
    status, url, page = staff.post_form("/machines/hub-a/command", page, action="refill",
                                        slot="3", count="4", expiry="2030-03", expired="2")
    assert status == 200, page
    assert "Done: slot 3 (foil) refilled to 4, use by end of Mar 2030; 2 past their date " \
           "taken out." in page
    wait(lambda: '<td data-label="Use by" class="date ">Mar 2030</td>' in staff.get(
        "/machines/hub-a")[2], what="the slot's date at the hub")
    wait(lambda: "Packs taken out past their date" in (r := staff.get("/reports")[2])
         and 'data-label="Foil">2</td>' in r, what="the packs taken out in the reports")


def test_the_hub_signs_each_machine_s_commands_with_its_own_key(tmp_path):
    hub = Hub(tmp_path, keys={"hub-a": "key of mare street", "hub-b": "a key hub-b does not have"})
    try:
        hub.start_machine("hub-a", key="key of mare street")
        hub.start_machine("hub-b", key="the key hub-b really has")
        staff = hub.client("sam")
        wait(lambda: sum(m["online"] for m in staff.json("/api/machines")) == 2, what="both online")
        status, answer = staff.post_json("/api/machines/hub-a/commands",
                                         {"cmd": "refill", "slot": 3, "count": 4})
        assert status == 200 and answer["ok"], answer
        status, answer = staff.post_json("/api/machines/hub-b/commands",
                                          {"cmd": "refill", "slot": 3, "count": 4})
        assert status == 200 and answer["ok"] is False and answer["error"].startswith("sig:")
        counts = {m: ask(hub.tmp / m / "control.sock", {"id": "s", "cmd": "stock"})["result"]
                  ["slots"][2]["count"] for m in ("hub-a", "hub-b")}
        assert counts == {"hub-a": 4, "hub-b": 0}
    finally:
        hub.close()


def test_programs_post_json_and_nothing_else_gets_past_without_a_form_token(hub):
    hub.start_machine("hub-a")
    staff = hub.client("sam")
    wait(lambda: any(m["online"] for m in staff.json("/api/machines")), what="hub-a online")
    body = json.dumps({"cmd": "disable", "slot": 1}).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        status, _, text = staff.request("/api/machines/hub-a/commands", body,
                                        {"Content-Type": kind})  # what a cross-site form sends
        assert status == 415, (kind, status, text)
    status, answer = staff.post_json("/api/machines/hub-a/commands", {"cmd": "status"})
    assert status == 200 and answer["ok"]  # JSON needs no form token: SameSite and the type
    db = sqlite3.connect(hub.tmp / "hub.db")
    sent = [json.loads(c)["cmd"] for (c,) in db.execute("SELECT command FROM commands")]
    assert sent == ["status"]
    stock = ask(hub.tmp / "hub-a" / "control.sock", {"id": "s", "cmd": "stock"})["result"]
    assert stock["slots"][0]["status"] != "disabled"


def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(hub):
    staff = hub.client("sam")
    thief = HubClient(f"http://127.0.0.1:{hub.web_port}")
    for cookie in staff.jar:
        thief.jar.set_cookie(cookie)
    assert thief.get("/api/machines")[0] == 200
    _, _, page = staff.get("/")
    status, url, _ = staff.post_form("/logout", page)
    assert status == 200 and url.endswith("/login")
    assert staff.get("/api/machines")[0] == 401
    assert thief.get("/api/machines")[0] == 401  # ended at the hub, not only in one browser


def test_a_session_ends_twelve_hours_after_logging_in(hub):
    staff = hub.client("sam")
    assert staff.get("/api/machines")[0] == 200
    db = sqlite3.connect(hub.tmp / "hub.db")
    with db:
        db.execute("UPDATE sessions SET created = '2000-01-01T00:00:00Z'")
    assert staff.get("/api/machines")[0] == 401
    status, url, _ = staff.get("/picklist")
    assert status == 200 and "/login?next=/picklist" in url


@pytest.mark.parametrize("target, lands", [
    ("/picklist", "/picklist"), ("//evil.example/x", "/"), ("https://evil.example/", "/"),
    ("/\\evil.example", "/")])
def test_after_logging_in_next_leads_only_back_into_the_hub(hub, target, lands):
    client = HubClient(f"http://127.0.0.1:{hub.web_port}")
    status, _, page = client.get("/login?next=" + urllib.parse.quote(target, safe=""))
    status, url, _ = client.post_form("/login", page, username="sam", password=PASSWORDS["sam"])
    assert status == 200 and urllib.parse.urlsplit(url).netloc == f"127.0.0.1:{hub.web_port}"
    assert urllib.parse.urlsplit(url).path == lands
    # already logged in, the login page sends you on: into the hub only
    status, url, _ = client.get("/login?next=" + urllib.parse.quote(target, safe=""))
    assert urllib.parse.urlsplit(url).netloc == f"127.0.0.1:{hub.web_port}"
    assert urllib.parse.urlsplit(url).path == lands


def test_user_commands_and_a_bad_hub_config(tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text('[mqtt]\nhost = "127.0.0.1"\n[database]\npath = "hub.db"\n')
    assert hub_cli(config, "user", "add", "kim", "--role", "viewer", stdin="short\n").returncode == 64
    assert hub_cli(config, "user", "add", "kim", "--role", "viewer",
                   stdin="long enough pass\n").returncode == 0
    listed = hub_cli(config, "user", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("kim ") and "viewer" in listed.stdout
    assert hub_cli(config, "user", "remove", "kim").returncode == 0
    assert hub_cli(config, "user", "remove", "kim").returncode == 1
    config.write_text('[mqtt]\nhost = "127.0.0.1"\n[web]\nlisten = "everywhere"\n')
    result = hub_cli(config, "run")
    assert result.returncode == 78
    assert result.stderr.strip() == (f"nspvend: config {config}: web.listen: must be host:port "
                                     "such as 127.0.0.1:8080, not 'everywhere'")


# -- alerts: a real SMTP server and a webhook receiver on loopback --------------------------
class Webhook:
    """A webhook receiver on loopback; the first ``failing`` posts are answered 503."""

    def __init__(self, failing: int = 0) -> None:
        self.bodies: list[dict] = []
        self.failing = failing
        self.refused = 0
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if hook.refused < hook.failing:
                    hook.refused += 1
                    self.send_response(503)
                else:
                    hook.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/nspvend"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Mailbox:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
                box.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def subjects(self) -> list[str]:
        return [m["Subject"] for m in self.messages]

    def close(self) -> None:
        self.controller.stop()


def test_an_alert_is_raised_once_and_cleared_once_by_email_and_webhook(tmp_path):
    hook, mail = Webhook(), Mailbox()
    hub = Hub(tmp_path, alerts={
        "smtp_host": "127.0.0.1", "smtp_port": mail.port, "email_from": "hub@example.org",
        "routes": [{"types": ["jam", "offline"], "email": ["oncall@example.org"],
                    "webhook": hook.url, "hours": "always"}]})
    try:
        daemon = hub.start_machine("hub-a")
        hub.fill("hub-a")
        staff = hub.client("sam")
        hub.world("hub-a", {"op": "fault", "kind": "jam", "slot": 3})
        hub.world("hub-a", {"op": "press", "button": 2})  # foil's only slot jams

        def told(kind: str, state: str) -> list[dict]:
            return [b for b in hook.bodies if b["type"] == kind and b["state"] == state]

        [raised] = wait(lambda: told("jam", "raised"), 40, "jam raised at the webhook")
        assert raised["machine"] == "hub-a" and raised["schema"] == 1
        assert raised["url"].endswith("/machines/hub-a")
        assert (raised["name"], raised["product"], raised["detail"]) == (
            "Mare Street", "foil", "Slot 3 (foil) jammed")
        hub.world("hub-a", {"op": "fault", "kind": "clear", "slot": 3})
        status, answer = staff.post_json("/api/machines/hub-a/commands",
                                         {"cmd": "clear_fault", "slot": 3})
        assert status == 200 and answer["ok"]
        [cleared] = wait(lambda: told("jam", "cleared"), 40, "jam cleared at the webhook")
        assert re.fullmatch(r"Slot 3 \(foil\) working again after \d+ s", cleared["detail"])
        daemon.kill()  # kill -9: the broker says offline (the last will)
        wait(lambda: told("offline", "raised"), 40, "offline raised")
        hub.start_machine("hub-a")
        wait(lambda: told("offline", "cleared"), 40, "offline cleared")
        time.sleep(4)  # two more rounds of checks: nothing is said twice
        kinds = [(b["type"], b["state"]) for b in hook.bodies]
        assert kinds == [("jam", "raised"), ("jam", "cleared"), ("offline", "raised"),
                         ("offline", "cleared")], kinds
        wait(lambda: len(mail.messages) == 4, 20, "four emails")
        subjects = [re.sub(r"\d+", "N", s) for s in mail.subjects()]
        assert subjects[0] == "[nspvend] Mare Street: Slot N (foil) jammed"
        assert subjects[1] == "[nspvend] Mare Street: Slot N (foil) working again after N s"
        assert re.fullmatch(r"\[nspvend\] Mare Street: Offline: nothing heard since "
                            r"[A-Z][a-z]{2} N [A-Z][a-z]{2}, N:N", subjects[2])  # local time
        assert re.fullmatch(r"\[nspvend\] Mare Street: Back online after N (s|min)", subjects[3])
        assert all(m["To"] == "oncall@example.org" for m in mail.messages)
    finally:
        hub.close()
        hook.close()
        mail.close()


def test_a_webhook_that_cannot_be_reached_is_recorded_and_logged(tmp_path):
    port = free_port()  # nothing listens here yet
    hub = Hub(tmp_path, alerts={"routes": [{"types": ["jam"],
                                            "webhook": f"http://127.0.0.1:{port}/x"}]})
    try:
        hub.start_machine("hub-a")
        hub.fill("hub-a")
        hub.world("hub-a", {"op": "fault", "kind": "jam", "slot": 3})
        hub.world("hub-a", {"op": "press", "button": 2})
        db = tmp_path / "hub.db"

        def attempts() -> int:
            with sqlite3.connect(db) as conn:
                row = conn.execute("SELECT attempts, error FROM deliveries").fetchone()
            return row[0] if row and row[1] else 0

        wait(lambda: attempts() >= 1, 40, "a failed delivery")
        assert any("could not deliver an alert" in line for line in hub.process.log)
    finally:
        hub.close()


def test_staff_commands_ask_before_disabling_say_once_in_words_and_warn_when_offline(hub):
    hub.start_machine("hub-a")  # hub-b is configured and never heard
    hub.fill("hub-a")
    staff = hub.client("sam")
    wait(lambda: 'data-slot="3"' in staff.get("/machines/hub-a")[2] or None, what="the slots")
    _, _, page = staff.get("/machines/hub-a")
    assert "This machine is offline" not in page
    status, _, page = staff.post_form("/machines/hub-a/command", page, action="disable", slot="1")
    assert status == 200 and "Disable Slot 1 (1ml syringes) at Mare Street?" in page
    local = ask(hub.tmp / "hub-a" / "control.sock", {"id": "s", "cmd": "stock"})["result"]
    assert local["slots"][0]["status"] != "disabled"  # nothing sent before the yes
    status, _, page = staff.post_form("/machines/hub-a/command", page)  # "Yes, disable it"
    assert status == 200 and "Done: slot 1 (1ml syringes) disabled." in page
    local = ask(hub.tmp / "hub-a" / "control.sock", {"id": "s", "cmd": "stock"})["result"]
    assert local["slots"][0]["status"] == "disabled"
    assert "Done:" not in staff.get("/machines/hub-a")[2]  # once, not again on reload

    _, _, page = staff.get("/machines/hub-a")
    status, _, page = staff.post_form("/machines/hub-a/command", page, action="set_mode",
                                      mode="out_of_service")
    assert "Set Mare Street to out of service?" in page and "Yes, change the mode" in page
    _, _, page = staff.get("/machines/hub-a")
    status, _, page = staff.post_form("/machines/hub-a/command", page, action="set_messages",
                                      messages="Naloxone: ask at the Hub\nOpen 9 to 5")
    assert "Done: signposting messages set (2)." in page
    assert ">Naloxone: ask at the Hub\nOpen 9 to 5</textarea>" in page  # what it shows now

    _, _, page = staff.get("/machines/hub-b")
    found = re.search(r"This machine has not been heard yet\. A command sent now waits for it "
                      r"and runs when it is back, until \w{3} \d+ \w{3}, \d\d:\d\d;", page)
    assert found, page
    assert "A command sent now" not in hub.client("val").get("/machines/hub-b")[2]

    # what came from outside gets an answer, never a broken page
    status, answer = staff.post_json("/api/machines/hub-a/commands",
                                     {"cmd": "set_messages", "messages": 5})
    assert status == 200 and not answer["ok"] and "messages" in answer["error"]
    status, _, page = staff.get("/machines/hub-a")
    assert status == 200 and "Signposting messages cleared" in page  # the record, in words
    assert staff.get("/reports/usage.csv?from=0999-01-01&to=2026-01-01")[0] == 400
    _, _, page = staff.get("/alerts")
    assert staff.post_form("/alerts/99999999999999999999/ack", page)[0] == 404


def test_the_pick_list_puts_the_urgent_first_in_words_with_packs_to_bring(hub):
    hub.start_machine("hub-a")
    hub.fill("hub-a")  # syringes in slots 1 and 2 (20 each), foil in 3 (10)
    staff = hub.client("sam")
    hub.world("hub-a", {"op": "fault", "kind": "jam", "slot": 2})
    hub.world("hub-a", {"op": "press", "button": 1})  # slot 1 or 2; a jam in 2 is found
    hub.world("hub-a", {"op": "press", "button": 1})
    page = wait(lambda: (lambda p: p if "Jammed: clear it" in p else None)(
        staff.get("/picklist")[2]), 40, "the jam on the pick list")
    rows = re.findall(r'<tr class="(\w+)" data-machine="hub-a" data-slot="(\d)">', page)
    assert rows[0] == ("fault", "2"), rows  # the jammed slot first, said in words
    assert re.search(r"As at \w{3} \d+ \w{3}, \d\d:\d\d\.", page)
    totals = dict(re.findall(r"<tr><td>([^<]+)</td><td>([\d,]+)</td></tr>", page))
    assert set(totals) == {"1ml syringes", "Foil"}, totals  # by name
    assert "syringe-1ml" not in page.split("<h2>To bring</h2>")[1].split("</table>")[0]


def test_the_machines_json_pages_by_id_and_says_where_the_next_page_is(tmp_path):
    """``?limit=&after=``: pages by id, a Link header to the next while there is one; without
    them, every machine as before."""
    hub = Hub(tmp_path, machines=tuple(f"site-{n:02d}" for n in range(5)))
    try:
        client = hub.client("val")
        everyone = {m["id"] for m in client.json("/api/machines")}
        assert everyone == {"hub-a", "hub-b", *(f"site-{n:02d}" for n in range(5))}
        seen, after, pages = [], "", 0
        while True:
            with client.opener.open(f"{client.base}/api/machines?limit=3&after={after}",
                                    timeout=30) as answer:
                page = json.loads(answer.read())
                link = answer.headers.get("Link")
            pages += 1
            seen += [m["id"] for m in page]
            if not link:
                break
            assert link.endswith('>; rel="next"')
            after = link.split("after=")[1].split(">")[0]
        assert seen == sorted(everyone) and pages == 3
        assert client.get("/api/machines?limit=0")[0] == 400
        assert client.get("/api/machines?limit=lots")[0] == 400
    finally:
        hub.close()

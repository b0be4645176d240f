"""A real Mosquitto broker on a free loopback port, which tests stop, kill and restart."""

from __future__ import annotations

import collections
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``mosquitto -c`` with persistence, so sessions and queued messages survive a restart."""

    def __init__(self, folder: Path, extra: str = "", port: int | None = None,
                 listener: str | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            (listener or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
            # started as root, mosquitto would switch to the "mosquitto" user and could not
            # save its sessions in the test's folder; as anyone else the line does nothing
            + f"user {getpass.getuser()}\n"
            + f"persistence true\npersistence_location {folder}/\nautosave_interval 1\n"
            # not "all": a debug line per packet can fill the pipe faster than it is read
            + "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            + "log_type information\n" + extra)
        self.proc: subprocess.Popen | None = None
        self.log: collections.deque[str] = collections.deque(maxlen=2000)
        self.start()

    def start(self) -> None:
        # errors="replace": a reader thread that died on odd bytes would leave mosquitto
        # blocked on a full pipe, deaf even to SIGTERM
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stderr=subprocess.PIPE,
                                     text=True, errors="replace")
        proc, ready, running = self.proc, threading.Event(), threading.Event()

        def read() -> None:
            for line in proc.stderr:
                self.log.append(line)
                if " running" in line:  # said once every listener is bound
                    running.set()
                    ready.set()
            ready.set()  # it exited

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(10) or not running.is_set():
            proc.kill()
            raise RuntimeError("mosquitto did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        """A clean broker shutdown (it saves its sessions)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:  # seen once in CI; SIGINT is the same to it
                self._state("ignored SIGTERM")
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self._state("ignored SIGINT")
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("mosquitto did not stop on SIGTERM within 30 s:\n"
                                 + "".join(list(self.log)[-40:])) from None

    def _state(self, what: str) -> None:
        """Keep, with the log, what the kernel says of the broker (signal masks, state)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                lines = "".join(line for line in f if line.startswith(("State", "Sig", "Shd")))
        except OSError:
            lines = ""
        self.log.append(f"[test] mosquitto {what}:\n{lines}")
        sys.stderr.write(f"[test] mosquitto {what}:\n{lines}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


class Subscriber:
    """An independent client, as the hub: collects every message under a topic filter."""

    def __init__(self, port: int, topic: str = "nspvend/#", client_id: str = "",
                 username: str | None = None, password: str | None = None,
                 tls_ca: str | None = None, host: str = "127.0.0.1") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrivals: list[float] = []  # time.time() each message arrived
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        self.topic = topic
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.cond:
            self.messages.append((message.topic, message.payload, bool(message.retain)))
            self.arrivals.append(time.time())
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 20) -> list:
        """Wait until ``predicate(messages)`` holds; return the messages."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "never happened; got:\n" + "\n".join(
                            f"{t} {p[:200]!r}" for t, p, _ in self.messages[-30:]))
                self.cond.wait(left)
            return list(self.messages)

    def payloads(self, leaf: str) -> list:
        with self.cond:
            out = []
            for topic, payload, _ in self.messages:
                if topic.endswith("/" + leaf):
                    try:
                        out.append(json.loads(payload))
                    except ValueError:
                        out.append(payload.decode())
            return out

    def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def usage_buckets(usage: list[dict]) -> tuple[dict[str, dict], int]:
    """Usage messages de-duplicated by id, as the hub keeps them; and how many were re-sends."""
    seen: dict[str, dict] = {}
    repeats = 0
    for u in usage:
        if u["id"] in seen:
            repeats += 1
            assert seen[u["id"]] == u, "a re-sent bucket must be the same bucket"
        seen[u["id"]] = u
    return seen, repeats


def usage_totals(usage: list[dict]) -> tuple[dict, int]:
    """Counts per product from usage messages, each id once; and how many ids were repeated."""
    buckets, repeats = usage_buckets(usage)
    totals: dict[str, int] = {}
    for u in buckets.values():
        for product, n in u["counts"].items():
            totals[product] = totals.get(product, 0) + n
    return {p: n for p, n in totals.items() if n}, repeats

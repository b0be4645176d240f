"""``nspvend hub run``: the listener, the alerts and the web pages in one process.

The listener stores what machines say (its own thread); the alerts are checked as each
batch is stored and every few seconds (a machine that goes quiet says nothing), and their
deliveries are sent from the same background thread; uvicorn serves the pages. SIGTERM
stops them all.

Several processes may run at once on one store (``--instance N``): each stores its share of
the machines' messages and serves the pages (on one port, the kernel sharing the
connections out); only the one holding the store's lease (:meth:`HubStore.lead`) checks
and sends the alerts and forgets old events, and when it dies another takes the lease.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from controller.clock import iso
from hub.alerts import Alerts
from hub.config import HubConfig
from hub.listener import Heard, Listener
from hub.store import CATCH_UP, open_store
from hub.web import Web

log = logging.getLogger(__name__)

CHECK_S = 2.0
FORGET_EVERY_S = 3600.0
ASK_PER_CHECK = 25  # machines asked for their buckets per check (10,000 in under 15 minutes)
CATCH_UP_DAYS = 2  # how far back each asking goes, at the least
FIRST_ASK_S = 600.0  # the first asking, after this process starts running the alerts
REQUEST_TIMEOUT_S = 5.0  # a connection must have sent a whole request head by then
CONNECTIONS = 4000  # at once; beyond, 503 (the file table is raised to hold them)
FILES_WANTED = 16384


class TimelyH11(H11Protocol):
    """uvicorn's HTTP/1.1, closing a connection that has not sent a whole request head within
    :data:`REQUEST_TIMEOUT_S` of opening, or of its last answer (a thousand half-sent
    requests, or one dripped a byte at a time after a first, must not hold the port)."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # noqa: D102
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:  # noqa: D102
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's head must come in time too

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(REQUEST_TIMEOUT_S, self._too_slow)

    def _too_slow(self) -> None:
        self._head_timer = None
        # still waiting for a head (h11's IDLE): a request being answered is left alone
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def more_files(wanted: int = FILES_WANTED) -> int:
    """Raise this process's open-file limit towards ``wanted`` (as far as the hard limit
    allows; systemd's unit sets LimitNOFILE): each connection is a file. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class HubService:
    """Everything one hub process runs, wired together."""

    def __init__(self, config: HubConfig, shared_port: bool = False) -> None:
        self.config = config
        self.shared_port = shared_port
        self.store = open_store(config)
        self.leading = False
        self._forgot = 0.0
        self._asked: float | None = None  # when the machines were last asked for buckets
        self._to_ask: list[str] = []
        self._since = ""
        self.alerts = Alerts(config, self.store)
        self.listener = Listener(config, self.store, on_heard=self._heard)
        self.web = Web(config, self.store, self.listener)
        self._stop = threading.Event()
        self._checker = threading.Thread(target=self._check_loop, name="hub-alerts", daemon=True)
        if config.share_group and len(config.share_group) < 16:
            log.warning("mqtt.share_group is short: any account on the broker that guesses it "
                        "takes a share of the machines' messages (the catch-up asks the "
                        "machines for the buckets it takes); make it long and random")

    def _heard(self, batch: list[Heard]) -> None:
        self.web.answers.heard(batch)
        if self.leading:
            self.alerts.heard(batch)

    def _check_loop(self) -> None:
        while not self._stop.wait(CHECK_S):
            try:
                self.listener.directory.refresh()  # machines enrolled or removed meanwhile
                leading = self.store.lead()
                if leading != self.leading:
                    log.info("this process %s the alerts", "now runs" if leading else "no longer runs")
                self.leading = leading
                if not leading:
                    self._asked, self._to_ask = None, []
                    continue
                self.alerts.sweep()
                self.alerts.deliver()
                self._catch_up()
                if time.monotonic() - self._forgot >= FORGET_EVERY_S:
                    self._forgot = time.monotonic()
                    cutoff = self.alerts.clock.now() - timedelta(days=self.config.keep_events_days)
                    gone = self.store.forget_before(cutoff)
                    if gone:
                        log.info("forgot %d events older than %d days", gone,
                                 self.config.keep_events_days)
            except Exception as e:
                log.warning("checking alerts failed (%s); trying again in %.0f s",
                            str(e).strip().splitlines()[0][:200] if str(e) else type(e).__name__,
                            CHECK_S)

    def _catch_up(self) -> None:
        """Every ``mqtt.catch_up_s`` (and when this process starts running the alerts), ask
        each machine online for its closed buckets of the last days; the listener stores any
        the hub never heard (a broker that lost them, or a stranger taking a share of them)."""
        every = self.config.catch_up_s
        if not every or not self.listener.connected.is_set():
            return
        if self._asked is None:
            self._asked = time.monotonic() - every + min(FIRST_ASK_S, every)
        if not self._to_ask and time.monotonic() - self._asked >= every:
            self._asked = time.monotonic()
            self._to_ask = self.store.fleet.online()
            self._since = iso(self.alerts.clock.now()
                              - max(timedelta(days=CATCH_UP_DAYS), timedelta(seconds=2 * every)))
        asking, self._to_ask = self._to_ask[:ASK_PER_CHECK], self._to_ask[ASK_PER_CHECK:]
        for machine in asking:
            self.listener.send_command(machine, {"cmd": "usage", "since": self._since},
                                       CATCH_UP, quiet=True)
        if asking and not self._to_ask:
            log.info("asked the machines online for their buckets since %s", self._since)

    def _shared_socket(self) -> socket.socket:
        """The web port, bound so that the other hub processes can bind it too: the kernel
        shares the connections out, and when one process stops the others take them all."""
        host, port = self.config.listen_host, self.config.listen_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        return sock

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit code."""
        files = more_files()
        server = uvicorn.Server(uvicorn.Config(
            self.web.app, host=self.config.listen_host, port=self.config.listen_port,
            log_config=None, access_log=False, server_header=False, proxy_headers=False,
            http=TimelyH11, limit_concurrency=min(CONNECTIONS, max(64, files - 200)),
            timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024))
        # uvicorn off the main thread: it then leaves the signals to us, and we stop in order
        try:
            sockets = [self._shared_socket()] if self.shared_port else None
        except OSError as e:
            log.error("cannot serve the web pages on %s:%d: %s", self.config.listen_host,
                      self.config.listen_port, e.strerror or e)
            self.store.close()
            return 1
        web = threading.Thread(target=server.run, kwargs={"sockets": sockets}, name="hub-web",
                               daemon=True)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: stop.set())
        self.leading = self.store.lead()
        if self.leading:
            log.info("this process runs the alerts")
        self.listener.start()
        if not self.listener.subscribed.wait(10):
            log.warning("no broker at %s:%d yet; serving the pages and trying again",
                        self.config.mqtt.host, self.config.mqtt.port)
        self._checker.start()
        web.start()
        while not server.started and web.is_alive():
            time.sleep(0.05)
        if not server.started:
            log.error("cannot serve the web pages on %s:%d (is something else there?)",
                      self.config.listen_host, self.config.listen_port)
        else:
            log.info("nspvend hub ready: %s (listening on %s:%d)", self.config.base_url,
                     self.config.listen_host, self.config.listen_port)
        while server.started and not stop.wait(0.5) and web.is_alive():
            pass
        log.info("stopping")
        server.should_exit = True
        web.join(15)
        self._stop.set()
        self._checker.join(10)
        self.listener.stop()
        self.store.close()
        log.info("stopped")
        return 0 if server.started else 1

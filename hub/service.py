"""``nspvend hub run``: the listener, the alerts and the web pages in one process.

The listener stores what machines say (its own thread); the alerts are checked as each
batch is stored and every few seconds (a machine that goes quiet says nothing), and their
deliveries are sent from the same background thread; uvicorn serves the pages on the
main thread. SIGTERM stops them all.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import uvicorn

from hub.alerts import Alerts
from hub.config import HubConfig
from hub.listener import Heard, Listener
from hub.store import HubStore
from hub.web import Web

log = logging.getLogger(__name__)

CHECK_S = 2.0


class HubService:
    """Everything one hub process runs, wired together."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.store = HubStore(config.database_path)
        self.alerts = Alerts(config, self.store)
        self.listener = Listener(config, self.store, on_heard=self._heard)
        self.web = Web(config, self.store, self.listener)
        self._stop = threading.Event()
        self._checker = threading.Thread(target=self._check_loop, name="hub-alerts", daemon=True)

    def _heard(self, batch: list[Heard]) -> None:
        self.web.answers.heard(batch)
        self.alerts.heard(batch)

    def _check_loop(self) -> None:
        while not self._stop.wait(CHECK_S):
            try:
                self.alerts.check()
                self.alerts.deliver()
            except Exception:
                log.exception("checking alerts failed; trying again in %.0f s", CHECK_S)

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit code."""
        server = uvicorn.Server(uvicorn.Config(
            self.web.app, host=self.config.listen_host, port=self.config.listen_port,
            log_config=None, access_log=False, server_header=False, proxy_headers=False))
        # uvicorn off the main thread: it then leaves the signals to us, and we stop in order
        web = threading.Thread(target=server.run, name="hub-web", daemon=True)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: stop.set())
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

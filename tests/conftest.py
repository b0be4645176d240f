"""Shared fixtures: a machine on the simulator with a hand-driven clock, on a real SQLite file."""

from __future__ import annotations

import copy
import itertools
import os
from pathlib import Path

import pytest

from controller.clock import FakeClock
from controller.commands import run_command
from controller.config import Config, parse_config
from controller.ledger import Ledger
from controller.vending import Tick, VendingMachine
from simulator import gpio_world
from simulator.backend import SimHardware
from simulator.model import PhysicalMachine
from tests.browser import browser  # noqa: F401 (the fixture: a real headless chromium)
from tests.machines import PRODUCTS, machine

# scripts/mutate runs the in-process tests once per mutant: fewer examples there, the same
# properties (the suite itself runs the full number)
MUTATING = bool(os.environ.get("NSPVEND_MUTATE"))


def examples(n: int) -> int:
    """How many examples a property test tries: ``n``, or a tenth of it under scripts/mutate."""
    return max(5, n // 10) if MUTATING else n


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true",
                     help="run the full crash/outage campaign (tests/test_campaign.py)")


# The in-process machine: the test machine with naloxone in a fourth slot.
BASE = machine(
    "test-01", "sim",
    schedule={"hub_open": ["Mon-Fri 10:00-16:00"], "hub_name": "The Hub"},
    display={"messages": ["Naloxone saves lives", "Free BBV testing"],
             "alternative": "Go to the Hub"},
    products=[*PRODUCTS, {"id": "naloxone", "name": "naloxone kit", "button": 3}],
    slots=[{"slot": 1, "product": "syringe-1ml", "capacity": 10, "low_at": 2},
           {"slot": 2, "product": "syringe-1ml", "capacity": 10, "low_at": 2},
           {"slot": 3, "product": "foil", "capacity": 8, "low_at": 2},
           {"slot": 4, "product": "naloxone", "capacity": 5, "low_at": 1}],
)
# The same machine wired to the Pi's GPIO, on gpiozero's mock pins driven by the model.
GPIO = {
    "pin_factory": "mock", "motors": [5, 6, 13, 19], "home_switches": [12, 16, 20, 21],
    "buttons": [4, 17, 27], "drop_sensor": 22, "door": 23, "sharps_bin": 24, "led": 25,
    "motor_timeout_ms": 60, "drop_wait_ms": 0,
}
BACKENDS = ("sim", "gpio")


def make_config(tmp: Path, backend: str = "sim", **overrides: object) -> Config:
    data = copy.deepcopy(BASE)
    if backend == "gpio":
        data["hal"], data["gpio"] = "gpio", copy.deepcopy(GPIO)
    data["database"] = {"path": str(tmp / "nspvend.db")}
    data["control"] = {"socket": str(tmp / "control.sock")}
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data, str(tmp / "nspvend.toml"))


class Rig:
    """A controller, its simulated machine and its clock, restartable on the same file."""

    def __init__(self, config: Config, clock: FakeClock | None = None) -> None:
        self.config = config
        self.clock = clock or FakeClock()
        self.model = PhysicalMachine(max(s.slot for s in config.slots))
        if config.backend == "gpio-mock":
            self.hw = gpio_world.open_hardware(config.hardware_settings, model=self.model)
        else:
            self.hw = SimHardware(self.model)
        self.changes: list[str] = []
        self._ids = itertools.count(1)
        self.vm: VendingMachine | None = None
        self.ledger: Ledger | None = None
        self.start()

    def start(self) -> VendingMachine:
        self.ledger = Ledger(self.config.database_path, self.config.machine_id)
        self.vm = VendingMachine(self.config, self.ledger, self.hw, self.clock,
                                 on_change=self.changes.append)
        self.vm.start()
        self.hw.start(self.vm.handle)
        return self.vm

    def stop(self) -> None:
        self.vm.stop()
        self.ledger.close()

    def restart(self) -> VendingMachine:
        """A graceful stop, then a new controller on the same SQLite file."""
        self.stop()
        return self.start()

    def crash_restart(self) -> VendingMachine:
        """The controller dies without stopping (power cut, kill -9) and starts again."""
        self.ledger.close()
        return self.start()

    def press(self, button: int) -> None:
        self.hw.press(button)

    def command(self, **request: object) -> dict:
        # A fresh id each time: the machine answers a repeated id from its memory without
        # acting (an id built from id(request) was reused by CPython and a refill was lost).
        request.setdefault("id", f"t-{next(self._ids)}")
        return run_command(self.vm, request)

    def refill(self, slot: int, count: int) -> dict:
        """Staff put packs in and tell the controller, as at the machine."""
        self.model.load(slot, count)
        return self.command(cmd="refill", slot=slot, count=count)

    def fill_all(self) -> None:
        for s in self.config.slots:
            self.refill(s.slot, s.capacity)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.vm.handle(Tick())

    def close_bucket(self) -> None:
        """Let the open bucket close: what its vends caused is told then."""
        self.tick(self.vm.seconds_to_close())

    def counts(self) -> dict[int, int]:
        return {n: s.count for n, s in self.vm.slots.items()}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The behaviour suite runs once per in-process backend."""
    return request.param


@pytest.fixture
def config(tmp_path: Path, backend: str) -> Config:
    return make_config(tmp_path, backend)


@pytest.fixture
def rig(config: Config) -> Rig:
    r = Rig(config)
    r.fill_all()
    yield r
    try:
        r.ledger.close()
    except Exception:
        pass


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server per test process (tests/postgres.py)."""
    from tests.postgres import WHY_NOT, Postgres

    if WHY_NOT:
        pytest.skip(WHY_NOT)
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of a new, empty PostgreSQL database."""
    return postgres_server.database()

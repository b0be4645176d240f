"""The ``gpio`` backend on gpiozero's mock pins: outputs never left on, wiring checked.

The behaviour suite (test_vending, test_stateful) also runs on this backend; here
are the things only direct wiring has.
"""

from __future__ import annotations

import threading

import pytest
from gpiozero.pins.mock import MockFactory

from controller.config import ConfigError
from hal import VendOutcome
from hal.gpio import GpioHardware
from simulator.model import PowerCut
from tests.conftest import GPIO, Rig, make_config
from tests.daemon_process import DaemonProcess, ask, nspvend
from tests.test_daemon_cli import CONFIG as SIM_CONFIG

OUTPUT_PINS = GPIO["motors"] + [GPIO["led"]]


def output_levels(rig: Rig) -> dict[int, bool]:
    return {n: rig.hw.factory.pin(n).state for n in OUTPUT_PINS}


@pytest.fixture
def grig(tmp_path):
    rig = Rig(make_config(tmp_path, "gpio"))
    rig.fill_all()
    yield rig
    rig.hw.close()
    rig.ledger.close()


@pytest.mark.parametrize("phase", ["before_motor", "before_drop", "after_drop"])
def test_a_power_cut_in_the_middle_of_a_vend_leaves_every_motor_off(grig, phase):
    grig.model.cut_power_during_next_turn(phase)
    with pytest.raises(PowerCut):
        grig.press(1)
    assert not any(grig.hw.factory.pin(n).state for n in GPIO["motors"])
    grig.crash_restart()
    assert grig.ledger.open_vends() == []  # settled: unconfirmed or not run, never re-run


def test_a_crash_inside_the_vend_cycle_switches_the_motor_off_and_the_machine_goes_on(grig,
                                                                                       monkeypatch):
    def broken(slot, home_reached, will_drop):
        raise RuntimeError("a bug in the middle of a turn")

    monkeypatch.setattr(grig.hw.world, "_finish", broken)
    with pytest.raises(RuntimeError):
        grig.hw.dispenser.vend(1, 901)
    assert grig.hw.factory.pin(GPIO["motors"][0]).state is False
    assert grig.hw.world.running[1] is False
    monkeypatch.undo()
    assert grig.hw.dispenser.vend(1, 902) is VendOutcome.DROPPED


def test_a_hung_caller_cannot_keep_a_motor_running(grig, monkeypatch):
    """The vend's own wait hangs (a stuck core loop); the independent cut-off fires."""
    release = threading.Event()
    cut = threading.Event()
    pin = grig.hw.world.motor_pins[1]
    watcher = pin.watcher

    def watch(level: bool) -> None:
        watcher(level)
        if not level:
            cut.set()

    pin.watcher = watch
    monkeypatch.setattr(grig.hw.world, "_finish", lambda *a: None)  # the spiral never gets home
    monkeypatch.setattr(grig.hw.dispenser._home_seen, "wait", lambda timeout=None: release.wait())
    vend = threading.Thread(target=grig.hw.dispenser.vend, args=(1, 903), daemon=True)
    vend.start()
    try:
        assert cut.wait(5), "the motor was left running"
        assert pin.state is False and vend.is_alive()  # cut while the caller still hangs
    finally:
        release.set()
        vend.join(5)


def test_outputs_are_driven_off_at_start_up_and_after_shutdown(tmp_path):
    config = make_config(tmp_path, "gpio")
    factory = MockFactory()
    for n in OUTPUT_PINS:  # left high by whatever ran before
        pin = factory.pin(n)
        pin.function = "output"
        pin.state = True
    hw = GpioHardware(config.gpio, factory)
    assert not any(factory.pin(n).state for n in OUTPUT_PINS)
    hw.led.set("ready")
    hw.motors[2].on()
    hw.close()
    assert not any(factory.pin(n).state for n in OUTPUT_PINS)


def test_active_low_relay_boards_are_off_when_high(tmp_path):
    config = make_config(tmp_path, "gpio", gpio={**GPIO, "motor_active_high": False})
    hw = GpioHardware(config.gpio, MockFactory())
    assert all(hw.factory.pin(n).state for n in GPIO["motors"])  # high = relay off
    hw.close()
    assert all(hw.factory.pin(n).state for n in GPIO["motors"])


def test_without_home_switches_a_turn_is_timed_and_a_dead_motor_is_a_jam(tmp_path):
    wiring = {k: v for k, v in GPIO.items() if k != "home_switches"}
    rig = Rig(make_config(tmp_path, "gpio", gpio={**wiring, "turn_ms": 50}))
    try:
        rig.fill_all()
        rig.press(2)
        assert rig.model.packs_dropped()[3] == 1
        rig.model.inject("motor_dead", 3)
        rig.press(2)
        assert rig.vm.slots[3].fault is not None
        assert rig.model.slots[3].turns == 3  # one vend, then the jammed turn and its retry
    finally:
        rig.hw.close()
        rig.ledger.close()


def test_the_door_and_sharps_bin_switches_are_reported(grig):
    grig.model.set_door(True)
    assert grig.vm.state_report()["door"] == "open" and grig.vm.mode == "service"
    grig.model.set_door(False)
    grig.model.set_sharps_bin_full(True)
    assert grig.vm.state_report()["sharps_bin"] == "full"


WIRING_MISTAKES = [
    ({"drop_sensor": 5}, "gpio.drop_sensor", "GPIO 5 is already gpio.motors[0]"),
    ({"led": 1}, "gpio.led", "reserved"),
    ({"buttons": [4, 17]}, "gpio.buttons", "no pin for button 3 (naloxone)"),
    ({"motors": [5, 6, 13], "home_switches": [12, 16, 20]}, "gpio.motors", "no pin for slot 4"),
    ({"home_switches": [12]}, "gpio.home_switches", "1 pins for 4 motors"),
    ({"motors": [5, 6, 13, 40]}, "gpio.motors[3]", "BCM GPIO number"),
    ({"buttons_pull": "sideways"}, "gpio.buttons_pull", '"up"'),
    ({"pin_factory": "wiringpi"}, "gpio.pin_factory", "lgpio"),
    ({"flux": 1}, "gpio.flux", "not a setting"),
]


@pytest.mark.parametrize(("change", "key", "problem"), WIRING_MISTAKES,
                         ids=[m[1] + "-" + m[2][:12] for m in WIRING_MISTAKES])
def test_a_wiring_mistake_is_one_line_naming_the_key(tmp_path, change, key, problem):
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, "gpio", gpio={**GPIO, **change})
    message = str(caught.value)
    assert f": {key}: " in message and problem in message and "\n" not in message, message


def test_check_config_exits_78_on_a_pin_used_twice(tmp_path):
    path = tmp_path / "nspvend.toml"
    path.write_text(SIM_CONFIG.replace('hal = "sim"', 'hal = "gpio"').replace(
        "[database]", '[gpio]\npin_factory = "mock"\nmotors = [5, 6, 13]\nbuttons = [4, 4]\n'
                      'drop_sensor = 22\n\n[database]'))
    result = nspvend("check-config", str(path))
    assert result.returncode == 78
    assert result.stderr.strip() == (f"nspvend: config {path}: gpio.buttons[1]: GPIO 4 is "
                                     "already gpio.buttons[0]")


def test_the_daemon_runs_the_gpio_backend_end_to_end_on_mock_pins(tmp_path):
    path = tmp_path / "nspvend.toml"
    path.write_text(SIM_CONFIG.replace('hal = "sim"', 'hal = "gpio"').replace(
        "[database]", '[gpio]\npin_factory = "mock"\nmotors = [5, 6, 13]\n'
                      "home_switches = [12, 16, 20]\nbuttons = [4, 17]\ndrop_sensor = 22\n"
                      "door = 23\nled = 25\n\n[database]"))
    daemon = DaemonProcess(path)
    try:
        sim = tmp_path / "sim.sock"
        ask(sim, {"op": "load", "slot": 3, "count": 5})
        assert ask(tmp_path / "control.sock", {"cmd": "refill", "id": "r", "slot": 3,
                                               "count": 5})["ok"]
        ask(sim, {"op": "press", "button": 2})
        # a request on the control socket is queued behind the press: the vend is done
        ask(tmp_path / "control.sock", {"cmd": "stock", "id": "sync"})
        ask(sim, {"op": "fault", "kind": "jam", "slot": 3})
        ask(sim, {"op": "press", "button": 2})
        status = ask(tmp_path / "control.sock", {"cmd": "status", "id": "s"})["result"]
        truth = ask(sim, {"op": "state"})
    finally:
        assert daemon.terminate() == 0
    assert truth["slots"][2]["packs_dropped"] == 1
    assert status["stock"]["slots"][2]["count"] == 4
    assert status["stock"]["slots"][2]["status"] == "fault"


def test_a_bouncing_button_is_one_press_and_one_pack(grig):
    world = grig.hw.world

    def packs() -> int:
        return sum(grig.model.packs_dropped().values())

    before = packs()
    world.hand_s += 5
    chatter = [(0.002, True), (0.002, False), (0.002, True), (0.002, False), (0.002, True)]
    world.contacts(2, *chatter)  # pressed, the contacts chattering: one press
    assert packs() == before + 1
    world.contacts(2, (1.5, False), (0.003, True), (0.003, False))  # held, let go, chatter
    assert packs() == before + 1
    world.contacts(2, (0.5, True), (0.1, False))  # a second press once the button rested
    assert packs() == before + 2
    grig.press(1)
    grig.press(1)  # two quick presses by a person (a second apart) are two packs
    assert packs() == before + 4

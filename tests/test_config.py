"""The config file: every bad key refused in one line naming file, key and problem; exit 78."""

from __future__ import annotations

import pytest

from controller.config import ConfigError, load_config
from tests.daemon_process import nspvend
from tests.test_daemon_cli import CONFIG


def write(tmp_path, text: str):
    path = tmp_path / "nspvend.toml"
    path.write_text(text)
    return path


def test_the_example_config_of_the_spec_loads(tmp_path):
    config = load_config(write(tmp_path, CONFIG))
    assert config.machine_id == "e2e-01"
    assert config.bucket_minutes == 60 and config.vend_retries == 1
    assert config.mqtt is None
    assert config.database_path == str(tmp_path / "data" / "nspvend.db")
    assert [s.slot for s in config.slots] == [1, 2, 3]


def test_the_demo_config_loads(tmp_path):
    import importlib.resources

    text = importlib.resources.files("simulator").joinpath("demo.toml").read_text()
    assert load_config(write(tmp_path, text)).hal == "sim"


BAD = [
    ('machine_id = "Hackney 01"', "machine_id", "lower-case letters"),
    ('hal = "usb"', "hal", 'must be "gpio", "serial" or "sim"'),
    ("[usage]\nbucket_minutes = 0", "usage.bucket_minutes", "from 1 to 1440"),
    ("[usage]\nbucket_minutes = 1441", "usage.bucket_minutes", "from 1 to 1440"),
    ('[usage]\nbucket_minutes = "60"', "usage.bucket_minutes", "whole number"),
    ("[vend]\nretries = -1", "vend.retries", "from 0 to 5"),
    ("[vend]\nretrys = 2", "vend.retrys", "not a setting nspvend knows"),
    ("colour = 1", "colour", "not a setting nspvend knows"),
    ('[schedule]\nhub_open = ["Mon-Fri 16:00-10:00"]', "schedule.hub_open[0]", "after the opening"),
    ('[schedule]\nhub_open = ["Funday 10:00-12:00"]', "schedule.hub_open[0]", "is not a day"),
    ('[schedule]\ntimezone = "Mars/Olympus"', "schedule.timezone", "is not a time zone"),
    ("[display]\nmessages = [1, 2]", "display.messages[0]", "non-empty string"),
    ("[mqtt]\nport = 1883", "mqtt.host", "is missing"),
    ('[mqtt]\nhost = "h"\nport = 70000', "mqtt.port", "from 1 to 65535"),
    ('[mqtt]\nhost = "h"\nprefix = "a/#"', "mqtt.prefix", "without wildcards"),
    ('[mqtt]\nhost = "h"\nhomeassistant = "yes"', "mqtt.homeassistant", "true or false"),
    ('[mqtt]\nhost = "h"\nusername = "u"\npassword_file = "nowhere/pw"', "mqtt.password_file",
     "cannot read"),
    ('[mqtt]\nhost = "h"\nca_file = "no-ca.crt"', "mqtt.ca_file", "cannot read"),
    ('[mqtt]\nhost = "h"\ncert_file = "nspvend.toml"', "mqtt.cert_file", "set ca_file too"),
    ('[mqtt]\nhost = "h"\npassword_file = "nspvend.toml"', "mqtt.password_file",
     "without username"),
    ('[sim]\ncontrol = ""', "sim.control", "not empty"),
    ('machine_id = "ok-1\\n"', "machine_id", "lower-case letters"),
    ('[mqtt]\nhost = "hub.example.org"\nusername = "u"\npassword_file = "nspvend.toml"',
     "mqtt.password_file", "in clear text: set ca_file"),
    ('[mqtt]\nhost = "h"\nstock_interval_s = 900', "mqtt.stock_interval_s",
     "shorter than the usage bucket (3600 s)"),
    ('[mqtt]\nhost = "h"\ncommand_key_file = "empty.key"', "mqtt.command_key_file", "is empty"),
    ('[mqtt]\nhost = "h"\ncommand_key_file = "no.key"', "mqtt.command_key_file", "cannot read"),
    ('[mqtt]\nhost = "h"\ncommand_max_age_s = 10', "mqtt.command_max_age_s", "from 60"),
    ('[control]\ngroup = ""', "control.group", "not empty"),
    ("[vend]\npress_max_wait_s = 0", "vend.press_max_wait_s", "from 1 to 600"),
]


@pytest.mark.parametrize(("extra", "key", "problem"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_setting_is_named_with_its_file_and_problem(tmp_path, extra, key, problem):
    base = CONFIG.replace('hal = "sim"\n', "") if extra.startswith("hal") else CONFIG
    if extra.startswith("machine_id"):
        base = base.replace('machine_id = "e2e-01"\n', "")
    if extra.startswith("[sim]"):
        base = base.replace('[sim]\ncontrol = "sim.sock"\n', "")
    if extra.startswith("[display]"):
        base = base.replace('[display]\nmessages = ["Free BBV testing at the Hub"]\n', "")
    if extra.startswith("[control]"):
        base = base.replace('[control]\nsocket = "control.sock"\n', "")
    (tmp_path / "empty.key").write_text("  \n")
    path = write(tmp_path, extra + "\n" + base if not extra.startswith("[") else base + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "\n" not in message


def test_product_and_slot_mistakes_are_named(tmp_path):
    cases = [
        (CONFIG.replace('product = "foil"', 'product = "fiol"'), "slots[2].product", "'fiol'"),
        (CONFIG.replace("button = 2", "button = 1"), "products[1].button", "already used"),
        (CONFIG.replace("low_at = 2", "low_at = 11"), "slots[2].low_at", "more than the capacity"),
        (CONFIG.replace("slot = 2\n", "slot = 1\n"), "slots[1].slot", "listed twice"),
        (CONFIG.replace("capacity = 10\n", ""), "slots[2].capacity", "is missing"),
        (CONFIG.split("[[products]]")[0], "products", "at least one"),
    ]
    for text, key, problem in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text))
        assert f": {key}: " in str(caught.value) and problem in str(caught.value), str(caught.value)


def test_a_file_that_is_not_toml_or_missing_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"nspvend.toml: is not valid TOML"):
        load_config(write(tmp_path, "machine_id = \n"))
    with pytest.raises(ConfigError, match=r"nope.toml: no such file"):
        load_config(tmp_path / "nope.toml")


def test_a_password_over_loopback_needs_no_tls(tmp_path):
    (tmp_path / "pw").write_text("secret\n")
    text = CONFIG + '[mqtt]\nhost = "127.0.0.1"\nusername = "u"\npassword_file = "pw"\n'
    assert load_config(write(tmp_path, text)).mqtt.password_file == str(tmp_path / "pw")


@pytest.mark.parametrize("what, content, problem", [
    ("invalid UTF-8", b'machine_id = "caf\xe9"\n', "is not UTF-8 text"),
    ("a 5,000-deep array", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests"),
    ("a folder", None, "is a folder, not a config file"),
])
def test_a_file_nobody_could_read_as_a_config_is_one_line_and_exit_78(tmp_path, what, content,
                                                                      problem):
    path = tmp_path / "nspvend.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for command in (["run", "--config", str(path)], ["check-config", str(path)]):
        result = nspvend(*command)
        assert result.returncode == 78, (what, result.stderr)
        assert result.stderr.count("\n") == 1 and problem in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_the_daemon_refuses_a_bad_config_with_exit_78_and_one_line(tmp_path):
    path = write(tmp_path, CONFIG.replace("retries", "x") + "[vend]\nretries = 9\n")
    result = nspvend("run", "--config", str(path))
    assert result.returncode == 78
    assert result.stderr == f"nspvend: config {path}: vend.retries: must be a whole number " \
                            "from 0 to 5, not 9\n"


def test_check_config_says_ok_or_exits_78(tmp_path):
    good = write(tmp_path, CONFIG)
    result = nspvend("check-config", str(good))
    assert result.returncode == 0 and ": ok (e2e-01, hal sim, 2 products, 3 slots" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace('hal = "sim"', 'hal = "magic"'))
    result = nspvend("check-config", str(bad))
    assert result.returncode == 78
    assert result.stderr.count("\n") == 1 and ": hal: " in result.stderr


def test_a_config_with_the_retired_privacy_keys_starts_with_one_warning_line(tmp_path):
    from tests.daemon_process import DaemonProcess

    path = write(tmp_path, CONFIG + "\n[privacy]\nevent_delay_s = [60, 600]\nevent_round_s = 900\n")
    result = nspvend("check-config", str(path))
    assert result.returncode == 0 and ": ok (" in result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert "privacy.event_delay_s, privacy.event_round_s: retired and ignored" in result.stderr
    daemon = DaemonProcess(path)
    assert daemon.terminate() == 0
    assert len([line for line in daemon.log if "retired and ignored" in line]) == 1, daemon.log


def test_config_is_found_through_the_environment(tmp_path):
    import os

    path = write(tmp_path, CONFIG.replace('hal = "sim"', 'hal = "magic"'))
    result = nspvend("run", env={**os.environ, "NSPVEND_CONFIG": str(path)})
    assert result.returncode == 78 and str(path) in result.stderr


def test_a_flood_of_one_warning_is_written_ten_times_a_minute_and_then_counted():
    import logging
    import time as _time

    from controller.logs import Repeats

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    flood = Repeats(burst=10, window_s=0.5)
    handler.addFilter(flood)
    log = logging.getLogger("nspvend.test.flood")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        for n in range(1000):
            log.error("accept failed: %s", n)
        log.info("an ordinary line")  # below warnings: never held back
        assert len(records) == 11
        _time.sleep(0.6)  # the next window (the filter's clock is the monotonic one)
        log.error("accept failed: %s", "again")
        assert "(990 more like this in the last minute were not written)" in records[-1].msg
    finally:
        log.removeHandler(handler)

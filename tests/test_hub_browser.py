"""The hub in a real browser: Debian's chromium, headless, driven by selenium through
Debian's chromium-driver (nothing is downloaded). Staff see a machine go offline and come
back, refill a slot and see the tile change, download a month's CSV; a viewer sees no
command buttons and is refused a command."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.broker import MOSQUITTO
from tests.browser import HAVE_BROWSER, NO_BROWSER, tile, tile_text, until
from tests.browser import log_in as browser_log_in
from tests.daemon_process import ask
from tests.test_hub import PASSWORDS, Hub

pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed"),
    pytest.mark.skipif(not HAVE_BROWSER, reason=NO_BROWSER),
]


def log_in(driver, base: str, name: str) -> None:
    browser_log_in(driver, base, name, PASSWORDS[name])


def test_staff_see_a_machine_go_offline_refill_a_slot_and_download_the_csv(tmp_path, browser):
    from selenium.webdriver.common.by import By

    hub = Hub(tmp_path)
    try:
        base = f"http://127.0.0.1:{hub.web_port}"
        daemon = hub.start_machine("hub-a")
        hub.fill("hub-a")
        for button in (1, 2, 1):
            hub.world("hub-a", {"op": "press", "button": button})
        ask(hub.tmp / "hub-a" / "control.sock", {"id": "sync", "cmd": "stock"})
        log_in(browser, base, "sam")
        until(browser, lambda d: tile(d, "hub-a") is not None
              and tile(d, "hub-a").get_attribute("data-urgency") != "offline", "hub-a online")
        assert "Mare Street" in tile_text(browser, "hub-a")

        daemon.kill()  # the board updates itself: no reload
        until(browser, lambda d: tile(d, "hub-a").get_attribute("data-urgency") == "offline",
              "hub-a shown offline")
        assert "Offline" in tile_text(browser, "hub-a")
        hub.start_machine("hub-a")  # its last bucket, cut by the kill, is closed and sent now
        until(browser, lambda d: tile(d, "hub-a").get_attribute("data-urgency") != "offline",
              "hub-a back online")

        until(browser, lambda d: tile(d, "hub-a").find_element(By.TAG_NAME, "a").click() or True,
              "the tile's link clicked")
        until(browser, lambda d: "/machines/hub-a" in d.current_url, "the machine page")
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-slot='3']")
        count = row.find_element(By.NAME, "count")
        count.clear()
        count.send_keys("1")  # foil is low at 2
        row.find_element(By.CSS_SELECTOR, "button[value='refill']").click()
        until(browser, lambda d: "Done: slot 3 (foil) refilled to 1." in d.page_source,
              "the machine's answer, in words")
        assert browser.find_element(By.CSS_SELECTOR, "tr[data-slot='3'] .count").text == "1"
        assert "Slot 3 (foil) refilled to 1" in browser.find_element(By.CSS_SELECTOR,
                                                                     "table.staff-actions").text
        browser.find_element(By.LINK_TEXT, "Machines").click()
        until(browser, lambda d: tile(d, "hub-a") is not None
              and tile(d, "hub-a").get_attribute("data-urgency") == "low", "the tile shows low")
        assert "Foil: 1 left" in tile_text(browser, "hub-a")
        assert " · Low" in tile_text(browser, "hub-a")  # in words, not colour alone

        browser.find_element(By.LINK_TEXT, "Reports").click()
        today = datetime.now(ZoneInfo("Europe/London")).date()  # the hub's days
        start = today.replace(day=1)
        end = (start.replace(year=start.year + 1, month=1) if start.month == 12
               else start.replace(month=start.month + 1))
        for name, value in (("from", start), ("to", end)):
            field = browser.find_element(By.NAME, name)
            browser.execute_script("arguments[0].value = arguments[1]", field, value.isoformat())
        browser.find_element(By.CSS_SELECTOR, "form[action='/reports/usage.csv'] button").click()
        path = browser.downloads / f"nspvend-usage-{start}-{end}.csv"
        until(browser, lambda d: path.exists() and path.stat().st_size > 0, "the CSV downloaded")
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        assert {(r["machine"], r["product"]): int(r["confirmed"]) for r in rows} == {
            ("hub-a", "syringe-1ml"): 2, ("hub-a", "foil"): 1}
    finally:
        hub.close()


def test_a_viewer_sees_no_command_buttons_and_is_refused_a_command(tmp_path, browser):
    from selenium.webdriver.common.by import By

    hub = Hub(tmp_path)
    try:
        base = f"http://127.0.0.1:{hub.web_port}"
        hub.start_machine("hub-a")
        hub.fill("hub-a")
        log_in(browser, base, "val")
        until(browser, lambda d: tile(d, "hub-a") is not None, "the tile")
        browser.get(f"{base}/machines/hub-a")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table.slots"), "the slots")
        assert browser.find_elements(By.CSS_SELECTOR, "main form") == []
        assert browser.find_elements(By.CSS_SELECTOR, "main button") == []
        status = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/machines/hub-a/commands', {method: 'POST', credentials: 'same-origin',
                  headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({cmd: 'disable', slot: 1})}).then(r => done(r.status));
        """)
        assert status == 403
        time.sleep(0.5)
        local = ask(hub.tmp / "hub-a" / "control.sock", {"id": "s", "cmd": "stock"})["result"]
        assert local["slots"][0]["status"] != "disabled"
    finally:
        hub.close()

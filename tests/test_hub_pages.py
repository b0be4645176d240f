"""The hub as staff see it, in a real browser at a phone's 360 px and a desk's 1280 px: every
page fits the window (no sideways scrolling), every button and link is at least 44 px tall,
times are local and written as people write them, and axe-core 4.x finds no violation. The
board keeps working through a lost login, keeps keyboard focus through its refreshes and
tells a screen reader what changed; staff acknowledge a jam on /alerts and the board says
someone is on it."""

from __future__ import annotations

import re

import pytest

from tests.broker import MOSQUITTO
from tests.browser import (
    AXE,
    DESK,
    HAVE_BROWSER,
    NO_BROWSER,
    PHONE,
    SMALL_PHONE,
    axe_violations,
    log_in,
    look,
    size,
    tile,
    tile_text,
    until,
)
from tests.test_hub import PASSWORDS, Hub

pytestmark = [
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed"),
    pytest.mark.skipif(not HAVE_BROWSER, reason=NO_BROWSER),
]
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d|\d\d:\d\d:\d\dZ")


@pytest.fixture
def hub(tmp_path):
    hub = Hub(tmp_path, reports={"units": {"syringe-1ml": 10}, "people_who_inject": 60,
                                 "estimate_source": "a made-up estimate",
                                 "estimate_year": 2025, "injections_per_day": 2})
    hub.base = f"http://127.0.0.1:{hub.web_port}"
    yield hub
    hub.close()


def on_the_board(hub: Hub, browser) -> None:
    """hub-a running and filled, sam logged in, and hub-a online on the board."""
    hub.start_machine("hub-a")
    hub.fill("hub-a")
    log_in(browser, hub.base, "sam", PASSWORDS["sam"])
    until(browser, lambda d: tile(d, "hub-a") is not None and tile(d, "hub-a").get_attribute(
        "data-urgency") != "offline", "hub-a on the board")


def jam_foil(hub: Hub) -> None:
    hub.world("hub-a", {"op": "fault", "kind": "jam", "slot": 3})
    hub.world("hub-a", {"op": "press", "button": 2})  # foil's only slot jams


def test_every_page_fits_a_phone_and_a_desk_and_axe_finds_nothing_wrong(hub, browser):
    from selenium.webdriver.common.by import By

    assert AXE.exists(), "scripts/setup --with-broker installs axe-core (npm ci)"
    hub.start_machine("hub-a")  # hub-b is configured and never heard
    hub.fill("hub-a")
    hub.world("hub-a", {"op": "press", "button": 1})
    jam_foil(hub)
    log_in(browser, hub.base, "sam", PASSWORDS["sam"])
    until(browser, lambda d: "Slot 3 (foil) jammed" in tile_text(d, "hub-a"),
          "the jam on the board, in words with the product")
    browser.get(f"{hub.base}/reports")
    figure = browser.find_element(By.CSS_SELECTOR, "table.coverage").text
    assert "The last 12 months" in figure and "a made-up estimate, 2025" in browser.page_source
    browser.get(f"{hub.base}/")
    until(browser, lambda d: "Slot 3 (foil) jammed" in tile_text(d, "hub-a"), "the board again")
    board = tile_text(browser, "hub-a")
    assert "1ml syringes" in board and "Foil" in board  # stock by product name
    assert re.search(r"1ml syringes\s+\d+ of \d+", board), board

    def confirm_page() -> None:
        browser.get(f"{hub.base}/machines/hub-a")
        browser.find_element(By.CSS_SELECTOR, "tr[data-slot='1'] button[value='disable']").click()
        until(browser, lambda d: "Disable Slot 1 (1ml syringes) at Mare Street?" in d.page_source,
              "the question before disabling")

    pages = ["/", "/machines/hub-a", "/machines/hub-b", "/alerts", "/picklist", "/reports",
             "/reports?by=day", "/reports?by=week", "/reports?by=year", confirm_page]
    found = {}
    for width, height in (SMALL_PHONE, DESK):  # the narrowest phone, and a desk
        size(browser, width, height)
        for page in pages:
            if callable(page):
                page()
            else:
                browser.get(hub.base + page)
            name = f"{page if isinstance(page, str) else 'confirm'} at {width} px"
            seen = look(browser)
            problems = []
            if seen["scrollWidth"] > seen["width"]:
                problems.append(f"{seen['scrollWidth']} px wide in a {seen['width']} px window")
            problems += [f"too small to tap: {s}" for s in seen["small"]]
            if seen["smallestText"] < 12:
                problems.append(f"text {seen['smallestText']} px")
            problems += [f"a time as a program writes it: {t}" for t in
                         ISO_TIME.findall(seen["text"])]
            problems += [f"axe: {v['id']} ({v['help']}) at {v['nodes']}"
                         for v in axe_violations(browser)]
            if problems:
                found[name] = problems
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    until(browser, lambda d: "/login" in d.current_url, "logged out")
    for width, height in (PHONE, DESK):
        size(browser, width, height)
        browser.get(f"{hub.base}/login")
        seen = look(browser)
        problems = [f"axe: {v['id']} at {v['nodes']}" for v in axe_violations(browser)]
        problems += [f"too small to tap: {s}" for s in seen["small"]]
        if seen["scrollWidth"] > seen["width"]:
            problems.append(f"{seen['scrollWidth']} px wide")
        if problems:
            found[f"/login at {width} px"] = problems
    assert found == {}


def test_the_board_says_the_login_ended_and_works_again_after_logging_in(hub, browser):
    from selenium.webdriver.common.by import By

    on_the_board(hub, browser)
    board = browser.current_window_handle
    browser.switch_to.new_window("tab")  # a log out in another tab ends the login
    browser.get(f"{hub.base}/picklist")
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    until(browser, lambda d: "/login" in d.current_url, "logged out in the other tab")
    browser.close()
    browser.switch_to.window(board)

    banner = until(browser, lambda d: d.find_element(By.ID, "login-ended").is_displayed()
                   and d.find_element(By.ID, "login-ended"), "the board says the login ended")
    assert "Your login has ended" in banner.text and banner.get_attribute("role") == "alert"
    banner.find_element(By.LINK_TEXT, "Log in again").click()  # or wait: it goes in 5 s
    until(browser, lambda d: "/login?ended=1" in d.current_url, "taken to the login page")
    assert "Your login ended" in browser.page_source
    log_in(browser, hub.base, "sam", PASSWORDS["sam"])
    until(browser, lambda d: d.current_url.rstrip("/") == hub.base, "back on the board")
    jam_foil(hub)  # and the board updates itself again
    until(browser, lambda d: "Slot 3 (foil) jammed" in tile_text(d, "hub-a"),
          "the board updating after the login")


def test_focus_stays_changes_are_announced_and_a_jam_is_acknowledged(hub, browser):
    from selenium.webdriver.common.by import By

    on_the_board(hub, browser)
    browser.execute_script("document.querySelector(\".tile[data-machine='hub-a'] h2 a\").focus()")
    jam_foil(hub)
    until(browser, lambda d: "Slot 3 (foil) jammed" in tile_text(d, "hub-a"), "the jam")
    assert browser.execute_script("return document.activeElement.getAttribute('href')") == (
        "/machines/hub-a")  # the tile was replaced; the keyboard's place was not lost
    announce = browser.find_element(By.ID, "announce")
    assert announce.get_attribute("aria-live") == "polite"
    assert "Mare Street: In service; Slot 3 (foil) jammed" in announce.get_attribute("textContent")

    browser.find_element(By.LINK_TEXT, "Alerts").click()
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-type='jam']"), "the jam")
    nav = browser.find_element(By.LINK_TEXT, "Alerts")
    assert nav.get_attribute("aria-current") == "page"
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-type='jam']")
    assert "Mare Street" in row.text and "Slot 3 (foil) jammed" in row.text
    assert "foil" in row.find_element(By.CSS_SELECTOR, "td[data-label='Product']").text
    row.find_element(By.TAG_NAME, "button").click()
    until(browser, lambda d: "you are on it" in d.page_source, "the acknowledgement noted")
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-type='jam']")
    assert "sam, since" in row.text and not row.find_elements(By.TAG_NAME, "button")
    browser.refresh()
    assert "you are on it" not in browser.page_source  # the notice is shown once
    browser.find_element(By.LINK_TEXT, "Machines").click()
    until(browser, lambda d: tile(d, "hub-a") is not None
          and "Someone is on it: sam" in tile_text(d, "hub-a"), "someone is on it, on the board")

    hub.world("hub-a", {"op": "fault", "kind": "clear", "slot": 3})
    ask_clear = hub.client("sam").post_json("/api/machines/hub-a/commands",
                                            {"cmd": "clear_fault", "slot": 3})
    assert ask_clear[0] == 200 and ask_clear[1]["ok"]
    browser.get(f"{hub.base}/alerts")
    until(browser, lambda d: (d.refresh() or True) and not d.find_elements(
        By.CSS_SELECTOR, "table tr[data-type='jam'] button") and "Nothing is wrong" in
        d.page_source, "the jam ended", timeout=30)
    ended = browser.find_element(By.CSS_SELECTOR, "tr[data-type='jam']")
    assert "sam" in ended.find_element(By.CSS_SELECTOR, "td[data-label='Who was on it']").text

"""A real browser for the hub's pages: Debian's chromium, headless, driven by selenium through
Debian's chromium-driver, and axe-core 4.x (from the npm registry, installed by scripts/setup
from package-lock.json) injected into each page. Nothing is downloaded at test time."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
HAVE_BROWSER = Path(CHROMIUM).exists() and Path(DRIVER).exists()
NO_BROWSER = "chromium and chromium-driver not installed (scripts/setup does it)"
SMALL_PHONE, PHONE, DESK = (360, 740), (390, 844), (1280, 900)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    profile = tempfile.mkdtemp(prefix="nspvend-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars",
                 f"--user-data-dir={profile}", "--window-size=1280,1000", "--lang=en-GB"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def size(driver, width: int, height: int) -> None:
    """Show pages as a device this wide would (a phone's viewport at 390)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def log_in(driver, base: str, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    if "/login" not in driver.current_url:
        driver.get(f"{base}/login")
    driver.find_element(By.NAME, "username").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    until(driver, lambda d: "/login" not in d.current_url, "logged in")


def until(driver, condition, what: str, timeout: float = 40):
    """Wait for ``condition``; an element the board replaced as it was read is read again."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(
            StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        raise AssertionError(f"never happened: {what}\n{driver.page_source[:3000]}") from None


def tile(driver, machine: str):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f".tile[data-machine='{machine}']")
    return found[0] if found else None


def tile_text(driver, machine: str) -> str:
    """A tile's text as it is now, read in one go (the board may replace it at any moment)."""
    return driver.execute_script(
        "const t = document.querySelector(`.tile[data-machine='${arguments[0]}']`);"
        " return t ? t.innerText : '';", machine)


def axe_violations(driver) -> list[dict]:
    """What axe-core finds wrong with the page as it is now, at its default rules."""
    driver.execute_script(AXE.read_text())
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document).then(r => done(r.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))))
          .catch(e => done([{id: 'axe did not run', nodes: [String(e)]}]));
    """)


LOOK = """
    const small = [];
    for (const e of document.querySelectorAll('a, button, select, textarea, label.check, '
            + 'input:not([type=hidden]):not([type=checkbox]):not([type=radio])')) {
        const r = e.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;  // not shown (the skip link until focused)
        if (getComputedStyle(e).visibility === 'hidden') continue;
        const what = (e.textContent || e.name || '').trim().slice(0, 30);
        if (r.height < 44) small.push(`${e.tagName.toLowerCase()} "${what}" ${Math.round(r.height)} px`);
    }
    const fonts = [...document.querySelectorAll('.chart-label, .chart-figure, td, th, p, li')]
        .filter(e => e.getBoundingClientRect().height > 0)
        .map(e => parseFloat(getComputedStyle(e).fontSize));
    return {scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth,
            small: small, smallestText: Math.min(...fonts, 99), text: document.body.innerText};
"""


def look(driver) -> dict:
    """What a person sees of the page: how wide it is against the window, the targets under
    44 px tall, the smallest text, and the page's text."""
    return driver.execute_script(LOOK)

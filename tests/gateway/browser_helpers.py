"""A real headless Chromium through Selenium, for the playground tests.

Uses the system Chromium and chromedriver (Debian: `apt-get install chromium
chromium-driver`; `.ci/run` installs them). Without them the browser tests are
skipped, unless MLX_INTERP_REQUIRE_BROWSER is set (CI sets it), then they fail.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
WAIT_S = 300  # the slowest wait: a generation on the real model on a busy 2-core machine
POLL_S = 0.05


def _find(names) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_or_skip():
    chromium = _find(CHROMIUM_NAMES)
    driver = _find(("chromedriver",))
    if chromium is None or driver is None:
        message = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("MLX_INTERP_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[test]'")
    return chromium, driver


def start_browser(width: int = 1280, height: int = 800):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_or_skip()
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_window_size(width, height)
    return browser


def wait_for(predicate, timeout: float = WAIT_S, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def page_errors(browser) -> list[str]:
    """Script errors and failed loads the page logged (not the API errors it shows on purpose)."""
    out = []
    for entry in browser.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        message = entry["message"]
        if "Failed to load resource: the server responded with a status of" in message:
            continue  # an API answer the page is meant to show (401, 429 ...), not a broken page
        out.append(message)
    return out

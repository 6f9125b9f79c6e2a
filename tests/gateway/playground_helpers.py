"""Driving the playground page: open it, enter a key, send, read what it shows, save screenshots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selenium.webdriver.common.by import By

from browser_helpers import wait_for


def screenshot(browser, folder: Path, name: str) -> Path:
    """Save the whole page (not just the viewport) under the test's folder, and $MLX_INTERP_SCREENSHOTS."""
    path = Path(folder) / f"{name}.png"
    height = browser.execute_script("return Math.max(document.documentElement.scrollHeight, window.innerHeight)")
    size = browser.get_window_size()
    browser.set_window_size(size["width"], min(height + 140, 4000))
    try:
        browser.save_screenshot(str(path))
    finally:
        browser.set_window_size(size["width"], size["height"])
    extra = os.environ.get("MLX_INTERP_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def set_field(browser, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def enter_key(browser, key: str) -> None:
    field = browser.find_element(By.ID, "api-key")
    field.send_keys(key)
    browser.find_element(By.ID, "key-save").click()
    wait_for(lambda: browser.find_element(By.ID, "key-state").text == "key set for this tab", what="the key to be kept")


def open_page(browser, url: str, key: str | None = None) -> None:
    browser.get(url + "/")
    if key is not None:
        wait_for(lambda: browser.find_element(By.ID, "alert").text, what="the 401 notice")
        enter_key(browser, key)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".vector"), what="the vector sliders")


def answers_state(browser) -> str | None:
    return browser.find_element(By.ID, "answers").get_attribute("data-state")


def send_and_wait(browser, watch_stream: bool = False) -> list[int]:
    """Click Send and wait for the answer; with watch_stream, the token counts seen while it streamed."""
    browser.find_element(By.ID, "send").click()
    wait_for(lambda: answers_state(browser) in ("streaming", "done", "failed"), what="the request to start")
    counts = []
    if watch_stream:
        while answers_state(browser) == "streaming":
            counts.append(browser.execute_script("return document.querySelectorAll('.answer .tok').length"))
    wait_for(lambda: answers_state(browser) in ("done", "failed"), what="the answer")
    if answers_state(browser) == "failed":
        raise AssertionError("the page reported: " + browser.find_element(By.ID, "alert").text)
    return counts


def column_texts(browser) -> list[str]:
    return [e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".answer .tokens")]


def column_scores(browser) -> list[list[float]]:
    cols = browser.find_elements(By.CSS_SELECTOR, ".answer .tokens")
    return [[float(t.get_attribute("data-score")) for t in c.find_elements(By.CSS_SELECTOR, ".tok")] for c in cols]

"""The playground in a real headless Chromium, against real servers (tiny model here; the default model
in test_playground_real_model.py): keys, errors, libraries, layout. Screenshots go to each test's tmp_path
(and to $MLX_INTERP_SCREENSHOTS when set)."""

import threading

import httpx
import pytest
from selenium.webdriver.common.by import By

from browser_helpers import page_errors, start_browser, wait_for
from conftest import ADMIN_KEY, API_KEY
from gateway_helpers import ServerProcess, make_vector
from playground_helpers import enter_key, open_page, screenshot, send_and_wait

pytestmark = [pytest.mark.server, pytest.mark.browser]


@pytest.fixture()
def browser():
    b = start_browser()
    yield b
    b.quit()


def test_page_asks_for_the_key_then_keeps_it_for_the_tab(tiny_server, browser, tmp_path):
    browser.get(tiny_server.url + "/")
    alert = wait_for(lambda: browser.find_element(By.ID, "alert").is_displayed() and browser.find_element(By.ID, "alert").text)
    assert alert.startswith("Needs the API key (401): missing API key")
    screenshot(browser, tmp_path, "needs-key")
    assert browser.switch_to.active_element.get_attribute("id") == "api-key"  # focus goes where the fix is
    enter_key(browser, API_KEY)
    names = wait_for(lambda: [e.get_attribute("data-vector") for e in browser.find_elements(By.CSS_SELECTOR, ".vector")])
    assert names == ["pull", "push"]
    assert not browser.find_element(By.ID, "alert").is_displayed()
    models = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#model option")]
    assert models[0] == "default" and "pushed" in models
    # a reload in the same tab needs no retyping; the key is not in the page's markup
    browser.refresh()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".vector"))
    assert browser.execute_script("return sessionStorage.getItem('mlx-interp.api-key')") == API_KEY
    assert API_KEY not in browser.page_source
    assert page_errors(browser) == []


def test_a_generation_on_the_tiny_model_matches_the_api(tiny_server, browser, tmp_path):
    open_page(browser, tiny_server.url, key=API_KEY)
    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="single"]').click()
    max_tokens = browser.find_element(By.ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("6")
    send_and_wait(browser)
    body = browser.execute_script("return window.playground.lastRequest()")
    assert body["steer"] == [{"vector": "pull", "alpha": -6.0, "op": "add"}]  # first vector on, at its default alpha
    assert body["probes"] == {"alpha_probe": {"per_token": True}}
    api = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60).json()
    cells = browser.find_elements(By.CSS_SELECTOR, ".answer .tok")
    assert [float(c.get_attribute("data-score")) for c in cells] == pytest.approx(api["choices"][0]["probes"]["alpha_probe"]["per_token"], abs=1e-6)
    assert browser.find_element(By.CSS_SELECTOR, ".answer .tokens").text.replace("\u200b", "") == api["choices"][0]["message"]["content"]
    screenshot(browser, tmp_path, "tiny-answer")
    assert page_errors(browser) == []


def test_a_busy_server_shows_429_with_the_servers_message(tiny_model_dirs, tiny_artifacts, browser, tmp_path):
    server = ServerProcess("--model", str(tiny_model_dirs["llama"]), "--vectors", str(tiny_artifacts["vectors"]),
                           "--probes", str(tiny_artifacts["probes"]), "--max-batch", "1", "--max-queue", "1")
    long = {"model": "default", "messages": [{"role": "user", "content": "go"}], "max_tokens": 2048,
            "logit_bias": {"256": -100, "257": -100, "258": -100}}  # no end-of-text: runs all 2048 tokens
    clients = [httpx.Client(base_url=server.url, timeout=120) for _ in range(2)]

    def occupy(client):
        try:
            client.post("/v1/chat/completions", json=long)
        except httpx.HTTPError:
            pass  # cut off when the test closes its clients
    try:
        open_page(browser, server.url)
        running = threading.Thread(target=occupy, args=(clients[0],), daemon=True)
        running.start()
        wait_for(lambda: httpx.get(server.url + "/health").json()["batch_size"] == 1, what="a running request")
        queued = threading.Thread(target=occupy, args=(clients[1],), daemon=True)
        queued.start()
        wait_for(lambda: httpx.get(server.url + "/health").json()["queue_depth"] == 1, what="a queued request")
        browser.find_element(By.ID, "send").click()
        alert = wait_for(lambda: browser.find_element(By.ID, "alert").text, what="the error")
        assert alert.startswith("The server is busy (429): the request queue is full (1 waiting, --max-queue)")
        assert "Retry in 1 s." in alert
        assert browser.find_element(By.ID, "answers").get_attribute("data-state") == "failed"
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".answer .unfinished")] == ["No answer (see the message above)."] * 2
        assert browser.find_element(By.ID, "send").is_enabled()  # ready to try again
        screenshot(browser, tmp_path, "busy-429")
    finally:
        for c in clients:
            c.close()
        server.stop()


def test_upload_and_delete_need_the_admin_key(tiny_server, tiny_llama, browser, tmp_path):
    make_vector(tiny_llama, "uploaded_dir", tmp_path / "files", seed=9)
    open_page(browser, tiny_server.url, key=API_KEY)
    browser.find_element(By.ID, "tab-libraries").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#probe-library .card[data-name="beta_probe"]'))
    text = browser.find_element(By.CSS_SELECTOR, '#probe-library .card[data-name="beta_probe"]').text
    assert "best layer\n3" in text and "threshold\n0.900" in text

    def upload():
        browser.find_element(By.ID, "upload-json").send_keys(str(tmp_path / "files" / "uploaded_dir.json"))
        browser.find_element(By.ID, "upload-tensors").send_keys(str(tmp_path / "files" / "uploaded_dir.safetensors"))
        browser.find_element(By.ID, "upload").click()
        return wait_for(lambda: (t := browser.find_element(By.ID, "upload-state").text) != "Uploading…" and t)

    assert upload().startswith("Needs the admin key (403)")  # the API key is not enough
    browser.find_element(By.ID, "admin-key").send_keys(ADMIN_KEY + "\n")
    assert upload() == "Uploaded uploaded_dir."
    card = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#vector-library .card[data-name="uploaded_dir"]'))[0]
    assert "recommended layers\n1-2" in card.text and "(uploads)" in card.text
    assert browser.find_elements(By.CSS_SELECTOR, '.vector[data-vector="uploaded_dir"]')  # a slider for it in the chat view
    screenshot(browser, tmp_path, "libraries")
    delete = card.find_element(By.CSS_SELECTOR, "button.danger")
    delete.click()
    assert delete.text == "Confirm: delete uploaded_dir"  # two presses, no dialog
    delete.click()
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, '#vector-library .card[data-name="uploaded_dir"]'), what="the card to go")
    names = [v["name"] for v in httpx.get(tiny_server.url + "/v1/steering/vectors", headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"]]
    assert "uploaded_dir" not in names


def test_keyboard_only_and_a_narrow_window(tiny_server, tmp_path):
    from selenium.webdriver.common.keys import Keys

    browser = start_browser(420, 900)
    try:
        open_page(browser, tiny_server.url, key=API_KEY)
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"horizontal scrolling at 420px: {width}"
        # Ctrl+Enter in the message box sends; tokens are focusable and Enter opens their layer curve
        browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="single"]').click()
        message = browser.find_element(By.ID, "message")
        message.send_keys(Keys.CONTROL, Keys.ENTER)
        wait_for(lambda: browser.find_element(By.ID, "answers").get_attribute("data-state") == "done")
        first = browser.find_element(By.CSS_SELECTOR, ".answer .tok")
        first.send_keys(Keys.ARROW_RIGHT)
        assert browser.switch_to.active_element.get_attribute("data-index") == "1"
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        assert browser.find_element(By.CSS_SELECTOR, "#token-detail h3").text.startswith("Token 1 ")
        assert browser.find_elements(By.CSS_SELECTOR, "#token-detail svg.chart path.series.token")
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"horizontal scrolling at 420px after an answer: {width}"
        screenshot(browser, tmp_path, "narrow")
    finally:
        browser.quit()

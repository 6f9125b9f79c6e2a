"""The playground in a real headless Chromium, against real servers (tiny model here; the default model
in test_playground_real_model.py): keys, errors, libraries, layout. Screenshots go to each test's tmp_path
(and to $MLX_INTERP_SCREENSHOTS when set)."""

import json
import os
import re
import subprocess
import sys
import threading

import httpx
import pytest
from selenium.webdriver.common.by import By

from browser_helpers import page_errors, start_browser, wait_for
from gateway_helpers import ADMIN_KEY, API_KEY
from gateway_helpers import ServerProcess, make_vector
from playground_helpers import column_scores, column_texts, enter_key, open_page, screenshot, send_and_wait, set_field

pytestmark = [pytest.mark.server, pytest.mark.browser]

SWEEP = [(-4.0, 3.1), (-2.0, 1.0), (0.0, 0.0), (2.0, 0.5), (5.0, 2.0), (8.0, 4.2)]  # (alpha, log-prob drop)


@pytest.fixture(scope="module")
def own_server(tiny_model_dirs, tiny_llama, tiny_artifacts, tmp_path_factory):
    """A tiny-model server of this module's own (uploads here touch no other test), one row at a time and
    one waiting (so a third request is a 429), with a vector that carries calibration metadata."""
    vectors = tmp_path_factory.mktemp("playground-vectors")
    make_vector(tiny_llama, "push", vectors, seed=1)
    make_vector(tiny_llama, "tuned", vectors, seed=5, alpha=3.0)
    meta_path = vectors / "tuned.json"
    meta = json.loads(meta_path.read_text())
    sweep = [{"alpha": a, "logprob_drop": d, "coherent": d <= 2.5, "sample": f"text at {a}"} for a, d in SWEEP]
    meta.update({"calibrated": True, "calibration": {"coherent_range": [-2.0, 5.0], "recommended_alpha": 4.0,
                                                     "max_logprob_drop": 2.5, "sweep": sweep}})
    meta_path.write_text(json.dumps(meta))
    server = ServerProcess("--model", str(tiny_model_dirs["llama"]), "--vectors", str(vectors),
                           "--probes", str(tiny_artifacts["probes"]), "--api-key", API_KEY, "--admin-key", ADMIN_KEY,
                           "--max-batch", "1", "--max-queue", "1")
    yield server
    server.stop()


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
    # at 1280x800 the first slider, the message box and Send are all on screen without scrolling
    fits = browser.execute_script(
        "return ['message', 'send'].map(id => document.getElementById(id)).concat([document.querySelector('.vector input[type=range]')])"
        ".every(e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth; })")
    assert fits and browser.execute_script("return window.innerWidth") == 1280
    models = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#model option")]
    assert models[0] == "default" and "pushed" in models
    from selenium.webdriver.support.select import Select

    Select(browser.find_element(By.ID, "model")).select_by_value("pushed")  # a preset: its steering is named
    note = browser.find_element(By.ID, "preset-note")
    assert note.is_displayed() and 'steer {"push":8}' in note.text
    assert browser.execute_script("return window.playground.nextRequest()")["model"] == "pushed"
    # a reload in the same tab needs no retyping; the key is not in the page's markup
    browser.refresh()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".vector"))
    assert browser.execute_script("return sessionStorage.getItem('mlx-interp.api-key')") == API_KEY
    assert API_KEY not in browser.page_source
    assert page_errors(browser) == []


def contrast(css_a: str, css_b: str) -> float:
    """WCAG contrast ratio of two CSS rgb()/rgba() colours."""

    def luminance(css):
        r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css)[:3])
        lin = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(css_a), luminance(css_b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def idle(server) -> bool:
    health = httpx.get(server.url + "/health").json()
    return health["batch_size"] == 0 and health["queue_depth"] == 0


def test_a_generation_matches_the_api_and_its_snippets_reproduce_it(own_server, browser, tmp_path):
    open_page(browser, own_server.url, key=API_KEY)
    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="single"]').click()
    set_field(browser, "max-tokens", "6")
    set_field(browser, "message", "He said \"it's fine\" and\nleft: $HOME `date` \\ ü")  # quotes a shell and Python must keep
    send_and_wait(browser)
    body = browser.execute_script("return window.playground.lastRequest()")
    assert body["messages"] == [{"role": "user", "content": "He said \"it's fine\" and\nleft: $HOME `date` \\ ü"}]
    assert body["steer"] == [{"vector": "push", "alpha": 8.0, "op": "add"}]  # the first vector on, at its recommended alpha
    assert body["probes"] == {"alpha_probe": {"per_token": True}}
    api = httpx.post(own_server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60).json()
    content = api["choices"][0]["message"]["content"]
    # Scores travel rounded to 6 decimals; the second request reuses the first's prompt cache, so two
    # values a hair apart can round one step apart: "the same" is within two rounding steps.
    assert column_scores(browser)[0] == pytest.approx(api["choices"][0]["probes"]["alpha_probe"]["per_token"], abs=2e-6)
    assert column_texts(browser)[0] == content
    for cell in browser.find_elements(By.CSS_SELECTOR, ".answer .tok[data-score]"):  # readable text on every colour
        assert contrast(cell.value_of_css_property("color"), cell.value_of_css_property("background-color")) >= 4.5
    screenshot(browser, tmp_path, "tiny-answer")

    env = {**os.environ, "MLX_INTERP_API_KEY": API_KEY}
    browser.find_element(By.ID, "copy-curl").click()
    reply = json.loads(subprocess.run(["bash", "-c", browser.find_element(By.ID, "snippet").text], capture_output=True,
                                      text=True, env=env, timeout=120, check=True).stdout)
    assert reply["choices"][0]["message"]["content"] == content
    browser.find_element(By.ID, "copy-python").click()
    out = subprocess.run([sys.executable, "-c", browser.find_element(By.ID, "snippet").text], capture_output=True,
                         text=True, env=env, timeout=120, check=True).stdout
    assert out.startswith(f"0 {content!r}\n")
    assert page_errors(browser) == []


def test_the_calibrated_range_is_marked_on_the_slider(own_server, browser, tmp_path):
    open_page(browser, own_server.url, key=API_KEY)
    row = browser.find_element(By.CSS_SELECTOR, '.vector[data-vector="tuned"]')
    assert "recommended α 4 · coherent -2 … 5" in row.text
    assert float(row.find_element(By.CSS_SELECTOR, 'input[type="range"]').get_attribute("max")) == 10  # twice the widest mark, rounded up
    band = row.find_element(By.CSS_SELECTOR, ".slider .band")
    track = row.find_element(By.CSS_SELECTOR, ".slider").rect
    left = (band.rect["x"] - track["x"]) / track["width"]
    width = band.rect["width"] / track["width"]
    assert left == pytest.approx(8 / 20, abs=0.01) and width == pytest.approx(7 / 20, abs=0.01)  # -2..5 on -10..10
    assert row.find_elements(By.CSS_SELECTOR, ".slider .tick")
    number = row.find_element(By.CSS_SELECTOR, "input.alpha-number")
    set_field(browser, number.get_attribute("id"), "6.5")
    assert row.find_element(By.CSS_SELECTOR, ".range-warning").text == "outside the coherent range"
    plain = browser.find_element(By.CSS_SELECTOR, '.vector[data-vector="push"]')
    assert "not calibrated" in plain.text and not plain.find_elements(By.CSS_SELECTOR, ".slider .band")
    # the Libraries view draws the calibration sweep: one dot per alpha, the incoherent ones marked
    browser.find_element(By.ID, "tab-libraries").click()
    card = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#vector-library .card[data-name="tuned"]'))[0]
    assert "calibrated\nyes" in card.text and "coherent alpha range\n-2.000 … 5.000" in card.text
    assert len(card.find_elements(By.CSS_SELECTOR, "svg circle.dot")) == len(SWEEP)
    assert len(card.find_elements(By.CSS_SELECTOR, "svg circle.dot.incoherent")) == 2
    screenshot(browser, tmp_path, "calibrated-vector")


def test_stop_ends_a_stream_and_the_server_drops_it(own_server, browser, tmp_path):
    open_page(browser, own_server.url, key=API_KEY)
    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="single"]').click()
    set_field(browser, "max-tokens", "2048")
    # greedy decoding of this request does not end by itself soon, so only Stop can end it early
    preview = {**browser.execute_script("return window.playground.nextRequest()"), "max_tokens": 64}
    r = httpx.post(own_server.url + "/v1/chat/completions", json=preview, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.json()["choices"][0]["finish_reason"] == "length"
    browser.find_element(By.ID, "send").click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".answer .tok")) >= 3, what="a few tokens")
    browser.find_element(By.ID, "stop").click()
    assert wait_for(lambda: browser.find_element(By.ID, "alert").text) == "Stopped."
    assert browser.find_element(By.ID, "answers").get_attribute("data-state") == "failed"
    assert browser.find_element(By.CSS_SELECTOR, ".answer .unfinished").text == "The answer was cut short (see the message above)."
    wait_for(lambda: idle(own_server), what="the server to drop the stopped row")


def test_a_busy_server_shows_429_with_the_servers_message(own_server, browser, tmp_path):
    long = {"model": "default", "messages": [{"role": "user", "content": "go"}], "max_tokens": 2048,
            "logit_bias": {"256": -100, "257": -100, "258": -100}}  # no end-of-text: runs all 2048 tokens
    auth = {"Authorization": f"Bearer {API_KEY}"}
    clients = [httpx.Client(base_url=own_server.url, timeout=120, headers=auth) for _ in range(2)]

    def occupy(client):
        try:
            client.post("/v1/chat/completions", json=long)
        except httpx.HTTPError:
            pass  # cut off when the test closes its clients

    try:
        open_page(browser, own_server.url, key=API_KEY)
        wait_for(lambda: idle(own_server), what="an idle server")
        threading.Thread(target=occupy, args=(clients[0],), daemon=True).start()
        wait_for(lambda: httpx.get(own_server.url + "/health").json()["batch_size"] == 1, what="a running request")
        threading.Thread(target=occupy, args=(clients[1],), daemon=True).start()
        wait_for(lambda: httpx.get(own_server.url + "/health").json()["queue_depth"] == 1, what="a queued request")
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
    wait_for(lambda: idle(own_server), what="the server to drop the cut-off requests")


def test_upload_and_delete_need_the_admin_key(own_server, tiny_llama, browser, tmp_path):
    make_vector(tiny_llama, "uploaded_dir", tmp_path / "files", seed=9)
    open_page(browser, own_server.url, key=API_KEY)
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
    names = [v["name"] for v in httpx.get(own_server.url + "/v1/steering/vectors", headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"]]
    assert "uploaded_dir" not in names


def test_keyboard_only_and_a_narrow_window(own_server, tmp_path):
    from selenium.webdriver.common.keys import Keys

    browser = start_browser(420, 900)
    try:
        open_page(browser, own_server.url, key=API_KEY)
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


def test_op_layers_scope_and_value_go_into_the_request(own_server, browser):
    from selenium.webdriver.support.select import Select

    open_page(browser, own_server.url, key=API_KEY)
    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="single"]').click()
    row = browser.find_element(By.CSS_SELECTOR, '.vector[data-vector="push"]')
    Select(row.find_element(By.CSS_SELECTOR, 'select[id$="-op"]')).select_by_value("clamp")
    Select(row.find_element(By.CSS_SELECTOR, 'select[id$="-scope"]')).select_by_value("generation")
    set_field(browser, row.find_element(By.CSS_SELECTOR, 'input[id$="-value"]').get_attribute("id"), "1.5")
    layers = row.find_element(By.CSS_SELECTOR, 'input[id$="-layers"]')
    set_field(browser, layers.get_attribute("id"), "1, 3")
    tuned = browser.find_element(By.CSS_SELECTOR, '.vector[data-vector="tuned"]')
    tuned.find_element(By.CSS_SELECTOR, 'input[type="checkbox"]').click()
    steer = browser.execute_script("return window.playground.nextRequest()")["steer"]
    assert steer == [{"vector": "push", "alpha": 8, "op": "clamp", "layers": [1, 3], "scope": "generation", "value": 1.5},
                     {"vector": "tuned", "alpha": 4, "op": "add"}]
    set_field(browser, layers.get_attribute("id"), "2-3")
    assert browser.execute_script("return window.playground.nextRequest()")["steer"][0]["layers"] == "2-3"
    # settings the page cannot turn into a request are named before anything is sent
    set_field(browser, layers.get_attribute("id"), "first few")
    browser.find_element(By.ID, "send").click()
    assert browser.find_element(By.ID, "alert").text.startswith('layers "first few": use a range like 8-16')
    set_field(browser, layers.get_attribute("id"), "")
    set_field(browser, "guard", "[{not json")
    browser.find_element(By.ID, "send").click()
    assert browser.find_element(By.ID, "alert").text.startswith("guard rules are not valid JSON")
    assert browser.find_element(By.ID, "answers").get_attribute("data-state") is None  # nothing was sent


def test_guard_events_are_marked_where_they_fired(own_server, browser, tmp_path):
    rules = [{"probe": "alpha_probe", "above": 0.0, "for_tokens": 2, "then": "stop"}]
    open_page(browser, own_server.url, key=API_KEY)
    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="single"]').click()
    set_field(browser, "max-tokens", "8")
    set_field(browser, "guard", json.dumps(rules))
    send_and_wait(browser)
    body = browser.execute_script("return window.playground.lastRequest()")
    assert body["guard"] == rules
    api = httpx.post(own_server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60).json()
    choice = api["choices"][0]
    fired = choice["guard"]["fired"]
    assert fired and choice["finish_reason"] == "content_filter"
    marked = [int(e.get_attribute("data-index")) for e in browser.find_elements(By.CSS_SELECTOR, ".answer .tok.guarded")]
    assert marked == [ev["token_index"] for ev in fired]
    foot = browser.find_element(By.CSS_SELECTOR, ".answer .answer-foot").text
    assert "finish: content_filter (stopped by a guard)" in foot
    assert f"⚑ guard rule 0 fired at token {fired[0]['token_index']}" in foot
    browser.find_elements(By.CSS_SELECTOR, ".answer .tok.guarded")[0].click()
    assert "⚑ guard rule 0 fired here: stop" in browser.find_element(By.ID, "token-detail").text
    screenshot(browser, tmp_path, "guard")

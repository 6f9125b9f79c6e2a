// The playground page: settings -> one streamed chat request -> answers with a live probe heat-map.
// It uses only the public API; see gateway/playground.py for how the page itself is served.

import { AnswerBoard } from "./answers.js";
import { ApiError, getJSON, keys, stream } from "./api.js";
import { buildLegend } from "./colour.js";
import { vectorControl } from "./controls.js";
import { renderProbes, renderVectors, upload } from "./libraries.js";
import { readsPerToken, tokenThreshold, vectorCalibration } from "./metadata.js";
import { SettingsError, buildRequest, parseAlphas, parseGuard, streamed } from "./request.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  vectors: [],
  probes: [],
  vectorSettings: new Map(), // name -> {name, enabled, alpha, op, layers, scope, value}
  history: [], // messages of earlier turns
  lastRequest: null, // body of the last request sent, without the stream fields
  controller: null,
  snippetKind: "curl",
};

// -- messages to the user ------------------------------------------------------------------

function showAlert(text) {
  const box = $("alert");
  box.textContent = text;
  box.hidden = !text;
}

function explain(err) {
  if (err instanceof ApiError) return err.describe();
  if (err instanceof SettingsError) return err.message;
  return `Unexpected error: ${err.message || err}`;
}

// -- loading what the server offers ----------------------------------------------------------

async function loadModels() {
  const select = $("model");
  const previous = select.value;
  const { data } = await getJSON("/v1/models");
  state.models = data;
  select.replaceChildren(
    ...data.map((m) => {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = m.preset ? `${m.id} (preset)` : m.id;
      return o;
    }),
  );
  if (data.some((m) => m.id === previous)) select.value = previous;
  showPresetNote();
}

function showPresetNote() {
  const model = state.models.find((m) => m.id === $("model").value);
  const note = $("preset-note");
  if (model && model.preset) {
    const p = model.preset;
    note.textContent = `Preset ${model.id}: ${p.description || ""} steer ${JSON.stringify(p.steer)}, probes ${JSON.stringify(p.probes)}. The settings below are added to it.`;
    note.hidden = false;
  } else {
    note.hidden = true;
  }
}

async function loadLibraries() {
  const [vectors, probes] = await Promise.all([getJSON("/v1/steering/vectors"), getJSON("/v1/probes")]);
  state.vectors = vectors.data;
  state.probes = probes.data;
  renderVectorControls();
  renderProbeControls();
  const report = (text, isError) => {
    $("upload-state").textContent = text;
    if (isError) showAlert(text);
  };
  renderVectors($("vector-library"), state.vectors, refreshLibraries, report);
  renderProbes($("probe-library"), state.probes, refreshLibraries, report);
  refreshSnippet();
}

async function refreshLibraries() {
  try {
    await loadLibraries();
  } catch (err) {
    showAlert(explain(err));
  }
}

async function loadAll() {
  showAlert("");
  try {
    await Promise.all([loadModels(), loadLibraries()]);
  } catch (err) {
    showAlert(explain(err));
    if (err instanceof ApiError && err.status === 401) $("api-key").focus();
  }
}

// -- steering controls ----------------------------------------------------------------------

function settingsFor(meta, index) {
  const known = state.vectorSettings.get(meta.name);
  if (known) return known;
  const cal = vectorCalibration(meta);
  const fresh = { name: meta.name, enabled: index === 0, alpha: cal.recommended ?? 1, op: "add", layers: "", scope: "all", value: 0 };
  state.vectorSettings.set(meta.name, fresh);
  return fresh;
}

function renderVectorControls() {
  const box = $("vectors");
  box.replaceChildren();
  for (const name of [...state.vectorSettings.keys()]) {
    if (!state.vectors.some((v) => v.name === name)) state.vectorSettings.delete(name);
  }
  if (!state.vectors.length) {
    box.innerHTML = '<p class="muted">No steering vectors loaded.</p>';
  }
  state.vectors.forEach((meta, index) => box.append(vectorControl(meta, settingsFor(meta, index), settingsChanged)));
  const sweep = $("sweep-vector");
  const chosen = sweep.value;
  sweep.replaceChildren(...state.vectors.map((v) => new Option(v.name, v.name)));
  if (state.vectors.some((v) => v.name === chosen)) sweep.value = chosen;
}

// -- probe controls -------------------------------------------------------------------------

function renderProbeControls() {
  const box = $("probes");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren();
  if (!state.probes.length) box.innerHTML = '<p class="muted">No probes loaded.</p>';
  for (const p of state.probes) {
    const label = document.createElement("label");
    label.className = "check";
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = p.name;
    input.checked = checked.has(p.name);
    input.addEventListener("change", settingsChanged);
    label.append(input, ` ${p.name}`);
    if (p.position) label.append(Object.assign(document.createElement("span"), { className: "muted", textContent: ` reads at ${p.position}` }));
    box.append(label);
  }
  const heat = $("heat-probe");
  const previous = heat.value;
  const capable = state.probes.filter(readsPerToken);
  heat.replaceChildren(new Option("none", ""), ...capable.map((p) => new Option(p.name, p.name)));
  heat.value = capable.some((p) => p.name === previous) ? previous : capable.length ? capable[0].name : "";
  updateLegend();
}

function probeMeta(name) {
  return state.probes.find((p) => p.name === name) || null;
}

function updateLegend() {
  const name = $("heat-probe").value || null;
  const meta = name ? probeMeta(name) : null;
  buildLegend($("legend"), { probe: name, threshold: tokenThreshold(meta) });
}

// -- the request ----------------------------------------------------------------------------

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function currentSettings(message) {
  const seedText = $("seed").value.trim();
  const probes = [...$("probes").querySelectorAll("input:checked")].map((i) => i.value);
  const m = mode();
  return {
    model: $("model").value || "default",
    messages: [...state.history, { role: "user", content: message }],
    maxTokens: Math.max(1, Math.floor(Number($("max-tokens").value) || 1)),
    temperature: Math.max(0, Number($("temperature").value) || 0),
    seed: seedText === "" ? null : Math.floor(Number(seedText)),
    vectors: state.vectors.map((v) => state.vectorSettings.get(v.name)).filter(Boolean),
    mode: m,
    sweepVector: $("sweep-vector").value,
    sweepAlphas: m === "sweep" ? parseAlphas($("sweep-alphas").value) : [],
    probes,
    heatProbe: $("heat-probe").value || null,
    guard: parseGuard($("guard").value),
  };
}

// What Send would post now (without the stream fields); throws SettingsError on bad settings.
function nextRequest() {
  return buildRequest(currentSettings($("message").value));
}

function settingsChanged() {
  const m = mode();
  $("sweep-settings").hidden = m !== "sweep";
  $("mode-hint").textContent =
    m === "compare"
      ? "One request with n: 2: the switched-on vectors at alpha 0 (left) and at their alpha (right)."
      : m === "sweep"
        ? "One request with one choice per alpha, for the chosen vector."
        : "";
  if (!state.lastRequest) refreshSnippet();
}

function refreshSnippet() {
  let body = state.lastRequest;
  if (!body) {
    try {
      body = nextRequest().body;
    } catch (err) {
      $("snippet").textContent = explain(err);
      return;
    }
  }
  const origin = window.location.origin;
  const withKey = Boolean(keys.api());
  $("snippet").textContent = state.snippetKind === "curl" ? curlSnippet(origin, body, withKey) : pythonSnippet(origin, body, withKey);
  $("snippet").dataset.kind = state.snippetKind;
}

async function copySnippet(kind) {
  state.snippetKind = kind;
  refreshSnippet();
  const text = $("snippet").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-state").textContent = `Copied as ${kind === "curl" ? "curl" : "Python"}.`;
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("snippet"));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    $("copy-state").textContent = "The clipboard is not available here: the snippet is selected, press Ctrl+C.";
  }
}

// -- answers: columns of tokens --------------------------------------------------------------

// Earlier turns, then the question being answered (its answers are the columns below).
function renderHistory(question = null) {
  const turns = question ? [...state.history, { role: "user", content: question }] : state.history;
  $("history").replaceChildren(
    ...turns.map((m) => {
      const p = document.createElement("div");
      p.className = `turn ${m.role}`;
      p.textContent = m.content;
      return p;
    }),
  );
}

// -- sending --------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  if (state.controller) return;
  showAlert("");
  const message = $("message").value.trim();
  if (!message) {
    showAlert("Type a message first.");
    return;
  }
  let built;
  try {
    built = buildRequest(currentSettings(message));
  } catch (err) {
    showAlert(explain(err));
    return;
  }
  state.lastRequest = built.body;
  refreshSnippet();
  renderHistory(message);
  board.start(built.labels, $("heat-probe").value || null);
  const controller = new AbortController();
  state.controller = controller;
  $("send").disabled = true;
  $("stop").disabled = false;
  $("answers").setAttribute("aria-busy", "true");
  $("answers").dataset.state = "streaming";
  let ok = false;
  try {
    for await (const chunk of stream("/v1/chat/completions", streamed(built.body), controller.signal)) board.handle(chunk);
    ok = true;
  } catch (err) {
    if (err.name === "AbortError") showAlert("Stopped.");
    else showAlert(explain(err));
  } finally {
    state.controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    $("answers").setAttribute("aria-busy", "false");
    $("answers").dataset.state = ok ? "done" : "failed";
  }
  if (ok) {
    state.history.push({ role: "user", content: message }, { role: "assistant", content: board.lastContent() });
    $("message").value = "";
  } else {
    board.fail();
  }
}

// -- wiring ---------------------------------------------------------------------------------

function tabs() {
  const all = [$("tab-chat"), $("tab-libraries")];
  const show = (tab) => {
    for (const t of all) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    tab.focus();
  };
  for (const t of all) {
    t.addEventListener("click", () => show(t));
    t.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") show(all[(all.indexOf(t) + 1) % all.length]);
    });
  }
}

function keyForms() {
  const state_ = (id, on) => ($(id).textContent = on ? "key set for this tab" : "");
  state_("key-state", keys.api());
  state_("admin-state", keys.admin());
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    keys.setApi($("api-key").value.trim());
    $("api-key").value = "";
    state_("key-state", keys.api());
    refreshSnippet();
    loadAll();
  });
  $("admin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    keys.setAdmin($("admin-key").value.trim());
    $("admin-key").value = "";
    state_("admin-state", keys.admin());
  });
}

function uploadForm() {
  $("upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("upload-state").textContent = "Uploading…";
    try {
      const item = await upload({
        kind: $("upload-kind").value,
        name: $("upload-name").value.trim(),
        jsonFile: $("upload-json").files[0],
        tensorFile: $("upload-tensors").files[0],
      });
      $("upload-state").textContent = `Uploaded ${item.name}.`;
      $("upload-form").reset();
      await refreshLibraries();
    } catch (err) {
      $("upload-state").textContent = explain(err);
    }
  });
}

function main() {
  tabs();
  keyForms();
  uploadForm();
  $("send-form").addEventListener("submit", send);
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("send-form").requestSubmit();
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("new-chat").addEventListener("click", () => {
    state.history = [];
    state.lastRequest = null;
    renderHistory();
    board.clear();
    refreshSnippet();
  });
  $("model").addEventListener("change", () => {
    showPresetNote();
    settingsChanged();
  });
  $("heat-probe").addEventListener("change", () => {
    updateLegend();
    settingsChanged();
  });
  for (const id of ["max-tokens", "temperature", "seed", "guard", "sweep-alphas", "sweep-vector", "message"]) {
    $(id).addEventListener("input", settingsChanged);
  }
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener("change", settingsChanged);
  $("copy-curl").addEventListener("click", () => copySnippet("curl"));
  $("copy-python").addEventListener("click", () => copySnippet("python"));
  settingsChanged();
  loadAll();
}

const board = new AnswerBoard({ answers: $("answers"), applied: $("applied"), detail: $("token-detail") }, probeMeta);

// For tests and the curious: read-only views of what the page holds and would send.
window.playground = {
  state,
  nextRequest: () => nextRequest().body,
  lastRequest: () => state.lastRequest,
};

main();

// The playground page: settings -> one streamed chat request -> answers with a live probe heat-map.
// It uses only the public API; see gateway/playground.py for how the page itself is served.

import { ApiError, getJSON, keys, stream } from "./api.js";
import { layerChart } from "./charts.js";
import { buildLegend, scoreColour, textColour } from "./colour.js";
import { renderProbes, renderVectors, upload } from "./libraries.js";
import { layerList, readsPerToken, sliderSpan, vectorCalibration } from "./metadata.js";
import { OPS, SCOPES, SettingsError, buildRequest, parseAlphas, parseGuard, streamed } from "./request.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

const $ = (id) => document.getElementById(id);
const SLIDER_STEPS = 200;

const state = {
  models: [],
  vectors: [],
  probes: [],
  vectorSettings: new Map(), // name -> {name, enabled, alpha, op, layers, scope, value}
  history: [], // messages of earlier turns
  lastRequest: null, // body of the last request sent, without the stream fields
  answers: [], // per choice: {label, tokens: [{text, score, perLayer, el}], final, guard: []}
  steering: null, // the response's steering echo
  heatProbe: null,
  controller: null,
  snippetKind: "curl",
  done: false,
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

function labelled(text, control) {
  const wrap = document.createElement("div");
  wrap.className = "field";
  const label = document.createElement("label");
  label.htmlFor = control.id;
  label.textContent = text;
  wrap.append(label, control);
  return wrap;
}

function select(id, values, current) {
  const s = document.createElement("select");
  s.id = id;
  for (const v of values) {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = v;
    s.append(o);
  }
  s.value = current;
  return s;
}

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
  state.vectors.forEach((meta, index) => box.append(vectorControl(meta, settingsFor(meta, index))));
  const sweep = $("sweep-vector");
  const chosen = sweep.value;
  sweep.replaceChildren(...state.vectors.map((v) => new Option(v.name, v.name)));
  if (state.vectors.some((v) => v.name === chosen)) sweep.value = chosen;
}

function vectorControl(meta, s) {
  const id = `v-${meta.name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const cal = vectorCalibration(meta);
  const span = sliderSpan(meta);
  const row = document.createElement("div");
  row.className = "vector";
  row.dataset.vector = meta.name;

  const head = document.createElement("div");
  head.className = "vector-head";
  const on = document.createElement("input");
  on.type = "checkbox";
  on.id = `${id}-on`;
  on.checked = s.enabled;
  const onLabel = document.createElement("label");
  onLabel.htmlFor = on.id;
  onLabel.textContent = meta.name;
  const info = document.createElement("span");
  info.className = "muted";
  const bits = [];
  if (cal.recommended !== null) bits.push(`recommended α ${cal.recommended}`);
  bits.push(cal.range ? `coherent ${cal.range[0]} … ${cal.range[1]}` : "not calibrated");
  if (cal.unit) bits.push(`unit: ${cal.unit}`);
  info.textContent = bits.join(" · ");
  head.append(on, onLabel, info);

  const track = document.createElement("div");
  track.className = "slider";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.id = `${id}-alpha`;
  slider.min = String(-span);
  slider.max = String(span);
  slider.step = String(span / (SLIDER_STEPS / 2));
  slider.value = String(s.alpha);
  slider.setAttribute("aria-label", `alpha for ${meta.name}`);
  const pos = (a) => `${((a + span) / (2 * span)) * 100}%`;
  if (cal.range) {
    const band = document.createElement("div");
    band.className = "band";
    const lo = Math.max(-span, cal.range[0]);
    const hi = Math.min(span, cal.range[1]);
    band.style.left = pos(lo);
    band.style.width = `${((hi - lo) / (2 * span)) * 100}%`;
    band.title = `coherent range ${cal.range[0]} … ${cal.range[1]}`;
    track.append(band);
  }
  if (cal.recommended !== null && Math.abs(cal.recommended) <= span) {
    const tick = document.createElement("div");
    tick.className = "tick";
    tick.style.left = pos(cal.recommended);
    tick.title = `recommended alpha ${cal.recommended}`;
    track.append(tick);
  }
  const zero = document.createElement("div");
  zero.className = "zero";
  zero.style.left = pos(0);
  track.append(zero, slider);
  const scale = document.createElement("div");
  scale.className = "slider-scale";
  scale.innerHTML = `<span>${-span}</span><span>0</span><span>${span}</span>`;

  const number = document.createElement("input");
  number.type = "number";
  number.id = `${id}-alpha-number`;
  number.step = "any";
  number.value = String(s.alpha);
  number.className = "alpha-number";
  const warn = document.createElement("span");
  warn.className = "range-warning";
  warn.setAttribute("aria-live", "polite");

  const showWarning = () => {
    warn.textContent = cal.range && (s.alpha < cal.range[0] || s.alpha > cal.range[1]) ? "outside the coherent range" : "";
  };
  const setAlpha = (a, from) => {
    s.alpha = a;
    if (from !== slider) slider.value = String(a);
    if (from !== number) number.value = String(Number(a.toPrecision(6)));
    showWarning();
    settingsChanged();
  };
  slider.addEventListener("input", () => setAlpha(Number(slider.value), slider));
  number.addEventListener("input", () => {
    if (number.value !== "" && Number.isFinite(Number(number.value))) setAlpha(Number(number.value), number);
  });
  on.addEventListener("change", () => {
    s.enabled = on.checked;
    row.classList.toggle("off", !s.enabled);
    settingsChanged();
  });
  row.classList.toggle("off", !s.enabled);
  showWarning();

  const op = select(`${id}-op`, OPS, s.op);
  const layers = document.createElement("input");
  layers.id = `${id}-layers`;
  layers.value = s.layers;
  layers.placeholder = `${layerList(meta.recommended_layers) || "recommended"} (recommended)`;
  layers.spellcheck = false;
  const scope = select(`${id}-scope`, SCOPES, s.scope);
  const value = document.createElement("input");
  value.type = "number";
  value.step = "any";
  value.id = `${id}-value`;
  value.value = String(s.value);
  const valueField = labelled("clamp value", value);
  valueField.hidden = s.op !== "clamp";
  op.addEventListener("change", () => {
    s.op = op.value;
    valueField.hidden = s.op !== "clamp";
    settingsChanged();
  });
  layers.addEventListener("input", () => {
    s.layers = layers.value;
    settingsChanged();
  });
  scope.addEventListener("change", () => {
    s.scope = scope.value;
    settingsChanged();
  });
  value.addEventListener("input", () => {
    s.value = Number(value.value) || 0;
    settingsChanged();
  });

  const alphaRow = document.createElement("div");
  alphaRow.className = "alpha-row";
  const sliderBox = document.createElement("div");
  sliderBox.className = "slider-box";
  sliderBox.append(track, scale);
  alphaRow.append(sliderBox, labelled("α", number));
  const opts = document.createElement("div");
  opts.className = "grid3";
  opts.append(labelled("op", op), labelled("layers", layers), labelled("scope", scope), valueField);
  row.append(head, alphaRow, warn, opts);
  return row;
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

// The threshold one token's score is judged by: a token probe's own per-token threshold where it
// has one, else the probe's (response) threshold.
function tokenThreshold(meta) {
  if (!meta) return null;
  if (typeof meta.token_threshold === "number") return meta.token_threshold;
  return typeof meta.threshold === "number" ? meta.threshold : null;
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

function startAnswers(labels) {
  state.answers = labels.map((label) => ({ label, tokens: [], final: null, guard: [], finish: null }));
  state.steering = null;
  state.done = false;
  const box = $("answers");
  box.replaceChildren();
  box.classList.toggle("multi", labels.length > 1);
  state.answers.forEach((a, i) => {
    const col = document.createElement("article");
    col.className = "answer";
    col.dataset.index = String(i);
    const h = document.createElement("h3");
    h.textContent = a.label;
    const toks = document.createElement("div");
    toks.className = "tokens";
    toks.setAttribute("aria-label", `answer ${i + 1}: ${a.label}`);
    toks.addEventListener("keydown", tokenKeys);
    const foot = document.createElement("div");
    foot.className = "answer-foot";
    col.append(h, toks, foot);
    box.append(col);
    a.col = col;
  });
}

function column(index) {
  return state.answers[index] || null;
}

function addToken(index, text, scores) {
  const a = column(index);
  if (!a) return null;
  const heat = state.heatProbe && scores ? scores[state.heatProbe] : null;
  const tok = { text, score: heat ? heat.score : null, perLayer: heat && heat.per_layer ? heat.per_layer : null, guard: [] };
  const span = document.createElement("span");
  span.className = "tok";
  span.textContent = text === "" ? "\u200b" : text;
  span.tabIndex = 0;
  span.setAttribute("role", "button");
  span.dataset.index = String(a.tokens.length);
  if (tok.score !== null && tok.score !== undefined) {
    span.dataset.score = String(tok.score);
    span.style.backgroundColor = scoreColour(tok.score);
    span.style.color = textColour(tok.score);
    const meta = probeMeta(state.heatProbe);
    const limit = tokenThreshold(meta);
    if (limit !== null && tok.score >= limit) span.classList.add("over");
    span.setAttribute("aria-label", `${JSON.stringify(text)}: ${state.heatProbe} ${tok.score.toFixed(3)}`);
  } else {
    span.classList.add("plain");
  }
  span.addEventListener("click", () => showToken(index, Number(span.dataset.index)));
  tok.el = span;
  a.tokens.push(tok);
  a.col.querySelector(".tokens").append(span);
  return tok;
}

function addTail(index, text) {
  const a = column(index);
  if (!a || !text) return;
  const span = document.createElement("span");
  span.className = "tail";
  span.textContent = text;
  a.col.querySelector(".tokens").append(span);
  a.tail = (a.tail || "") + text;
}

function markGuard(index, events, tok) {
  const a = column(index);
  if (!a || !Array.isArray(events)) return;
  for (const ev of events) {
    const key = `${ev.rule}:${ev.token_index}:${ev.action}`;
    if (a.guard.some((g) => g.key === key)) continue;
    a.guard.push({ ...ev, key });
    // A rule on a prompt_last probe fires before any token (token_index null): listed, not marked.
    const target = ev.token_index === null || ev.token_index === undefined ? null : tok || a.tokens[ev.token_index] || a.tokens[a.tokens.length - 1];
    if (target) {
      target.el.classList.add("guarded");
      target.el.dataset.guard = `${target.el.dataset.guard ? `${target.el.dataset.guard}; ` : ""}rule ${ev.rule}: ${ev.action}`;
      target.el.title = `guard rule ${ev.rule} fired (${ev.action}, score ${ev.score})`;
      target.guard.push(ev);
    }
  }
  renderFoot(index);
}

function fmt(x) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(3) : "—";
}

function renderFoot(index) {
  const a = column(index);
  const foot = a.col.querySelector(".answer-foot");
  foot.replaceChildren();
  if (a.finish) {
    const p = document.createElement("p");
    p.className = "finish";
    p.textContent = `finish: ${a.finish}${a.finish === "content_filter" ? " (stopped by a guard)" : ""} · ${a.tokens.length} tokens`;
    foot.append(p);
  }
  for (const [name, r] of Object.entries((a.final && a.final.probes) || {})) {
    const div = document.createElement("div");
    div.className = `probe-result ${r.flagged ? "flagged" : ""}`;
    div.dataset.probe = name;
    div.dataset.flagged = String(Boolean(r.flagged));
    const badge = r.flagged ? "FLAGGED" : "not flagged";
    const how = r.aggregate ? `${r.aggregate} at layer ${r.layer}` : `at ${r.position || "?"}, layer ${r.layer}`;
    div.textContent = `${name}: ${fmt(r.score)} (${how}) · threshold ${fmt(r.threshold)} · ${badge} · before answering ${fmt(r.prompt_score)}`;
    foot.append(div);
  }
  for (const g of a.guard) {
    const div = document.createElement("div");
    div.className = "guard-event";
    const where = g.token_index === null || g.token_index === undefined ? "on the prompt" : `at token ${g.token_index}`;
    div.textContent = `⚑ guard rule ${g.rule} fired ${where} (score ${fmt(g.score)}): ${g.action}`;
    foot.append(div);
  }
}

function showSteering(steering) {
  if (!steering || !Array.isArray(steering.applied)) return;
  state.steering = steering;
  const parts = steering.applied.map((e) => {
    const alpha = Array.isArray(e.alpha) ? `[${e.alpha.join(", ")}]` : e.alpha;
    const warn = Array.isArray(e.warnings) && e.warnings.length ? ` ⚠ ${e.warnings.join("; ")}` : "";
    return `${e.vector} ${e.op} α=${alpha} layers ${layerList(e.layers) || e.layers} scope ${e.scope}${warn}`;
  });
  const box = $("applied");
  box.textContent = `Applied: ${parts.length ? parts.join(" | ") : "no steering"}`;
  box.hidden = false;
}

function showToken(index, t) {
  const a = column(index);
  const tok = a && a.tokens[t];
  if (!tok) return;
  for (const el of document.querySelectorAll(".tok.selected")) el.classList.remove("selected");
  tok.el.classList.add("selected");
  const box = $("token-detail");
  box.replaceChildren();
  const name = state.heatProbe;
  const meta = name ? probeMeta(name) : null;
  const h = document.createElement("h3");
  h.textContent = `Token ${t} ${JSON.stringify(tok.text)} in “${a.label}”`;
  box.append(h);
  const p = document.createElement("p");
  p.id = "token-score";
  p.textContent = name ? `${name}: ${fmt(tok.score)} at layer ${meta ? meta.best_layer : "?"}` : "No probe chosen.";
  box.append(p);
  for (const g of tok.guard) {
    const gp = document.createElement("p");
    gp.className = "guard-event";
    gp.textContent = `⚑ guard rule ${g.rule} fired here: ${g.action} (score ${fmt(g.score)})`;
    box.append(gp);
  }
  const series = [];
  if (tok.perLayer) series.push({ values: tok.perLayer, label: "this token", className: "token" });
  const agg = a.final && a.final.probes && name ? a.final.probes[name] : null;
  if (agg && Array.isArray(agg.per_layer)) series.push({ values: agg.per_layer, label: `whole answer (${agg.aggregate})`, className: "aggregate" });
  if (!series.length) {
    box.append(Object.assign(document.createElement("p"), { className: "muted", textContent: "No per-layer reading for this token." }));
    return;
  }
  box.append(
    layerChart({
      series,
      threshold: tokenThreshold(meta),
      bestLayer: meta ? meta.best_layer : null,
      label: `${name} reading at every layer for token ${t}`,
    }),
  );
  const key = document.createElement("p");
  key.className = "chart-key";
  key.innerHTML = '<span class="key token"></span> this token <span class="key aggregate"></span> whole answer <span class="key threshold"></span> threshold <span class="key best"></span> best layer';
  box.append(key);
}

function tokenKeys(event) {
  const el = event.target;
  if (!el.classList || !el.classList.contains("tok")) return;
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    el.click();
  } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    const all = [...el.parentElement.querySelectorAll(".tok")];
    const next = all[all.indexOf(el) + (event.key === "ArrowRight" ? 1 : -1)];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  }
}

// -- sending --------------------------------------------------------------------------------

function handleChunk(chunk) {
  if (chunk.steering) showSteering(chunk.steering);
  for (const c of chunk.choices || []) {
    const delta = c.delta || {};
    let tok = null;
    if (c.finish_reason) {
      addTail(c.index, delta.content || "");
      const a = column(c.index);
      if (a) {
        a.finish = c.finish_reason;
        a.final = { probes: c.probes || null };
      }
    } else if (delta.content || c.probes) {
      tok = addToken(c.index, delta.content || "", c.probes);
    }
    if (c.guard && Array.isArray(c.guard.fired)) markGuard(c.index, c.guard.fired, tok);
    if (c.finish_reason) renderFoot(c.index);
  }
  if (chunk.usage) {
    const u = chunk.usage;
    $("answers").dataset.usage = JSON.stringify(u);
  }
}

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
  state.heatProbe = $("heat-probe").value || null;
  state.lastRequest = built.body;
  refreshSnippet();
  renderHistory(message);
  $("applied").hidden = true;
  startAnswers(built.labels);
  const controller = new AbortController();
  state.controller = controller;
  $("send").disabled = true;
  $("stop").disabled = false;
  $("answers").setAttribute("aria-busy", "true");
  $("answers").dataset.state = "streaming";
  let ok = false;
  try {
    for await (const chunk of stream("/v1/chat/completions", streamed(built.body), controller.signal)) handleChunk(chunk);
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
  if (!ok) {
    for (const a of state.answers) {
      if (a.finish) continue;
      const note = document.createElement("p");
      note.className = "unfinished";
      note.textContent = a.tokens.length ? "The answer was cut short (see the message above)." : "No answer (see the message above).";
      a.col.querySelector(".answer-foot").append(note);
    }
  }
  if (ok) {
    // The conversation continues from the last column (the steered one when comparing).
    const last = state.answers[state.answers.length - 1];
    const content = last.tokens.map((t) => t.text).join("") + (last.tail || "");
    state.history.push({ role: "user", content: message }, { role: "assistant", content });
    $("message").value = "";
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
    $("answers").replaceChildren();
    $("applied").hidden = true;
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

// For tests and the curious: read-only views of what the page holds and would send.
window.playground = {
  state,
  nextRequest: () => nextRequest().body,
  lastRequest: () => state.lastRequest,
};

main();

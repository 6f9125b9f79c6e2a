// One steering vector's controls: on/off, an alpha slider (the calibrated coherent range shaded,
// the recommended alpha marked) with a number box, op, layers, scope and a clamp's value.
// They edit one settings object {name, enabled, alpha, op, layers, scope, value} in place.

import { layerList, sliderSpan, vectorCalibration } from "./metadata.js";
import { OPS, SCOPES } from "./request.js";

const SLIDER_STEPS = 200;

export function labelled(text, control) {
  const wrap = document.createElement("div");
  wrap.className = "field";
  const label = document.createElement("label");
  label.htmlFor = control.id;
  label.textContent = text;
  wrap.append(label, control);
  return wrap;
}

export function select(id, values, current) {
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

export function vectorControl(meta, s, settingsChanged) {
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
  // The contract's unit (total shift in class-mean differences) needs no note; imported control
  // vectors keep llama.cpp's per-layer meaning, and the slider should say so.
  if (cal.unit && cal.unit !== "class_mean_total") bits.push(cal.unit === "per_layer" ? "alpha per layer (llama.cpp meaning)" : `unit: ${cal.unit}`);
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

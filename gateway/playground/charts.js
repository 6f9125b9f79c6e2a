// Small SVG charts, drawn with DOM calls (no library): a probe's reading per layer, and a
// probe's calibration (reliability) curve. Values are probabilities in [0, 1]; nulls are gaps.

const NS = "http://www.w3.org/2000/svg";
const PAD = { left: 34, right: 10, top: 10, bottom: 28 };

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

function frame(width, height, label) {
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label });
  svg.append(el("title", {}, label));
  return svg;
}

function yAxis(svg, y, x0, x1) {
  for (const v of [0, 0.5, 1]) {
    svg.append(el("line", { x1: x0, x2: x1, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: x0 - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, v.toString()));
  }
}

function path(values, x, y) {
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || v === undefined || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  });
  return d;
}

// series: [{values, label, className}]; marks the probe's best layer and the threshold.
export function layerChart({ series, threshold = null, bestLayer = null, label, width = 420, height = 170 }) {
  const svg = frame(width, height, label);
  const n = Math.max(...series.map((s) => s.values.length), 2);
  const x = (i) => PAD.left + (i / (n - 1)) * (width - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v) * (height - PAD.top - PAD.bottom);
  yAxis(svg, y, PAD.left, width - PAD.right);
  const step = n > 20 ? 5 : n > 10 ? 2 : 1;
  for (let i = 0; i < n; i += step) {
    svg.append(el("text", { x: x(i), y: height - PAD.bottom + 14, class: "axis", "text-anchor": "middle" }, i.toString()));
  }
  svg.append(el("text", { x: (PAD.left + width - PAD.right) / 2, y: height - 2, class: "axis", "text-anchor": "middle" }, "layer"));
  if (threshold !== null) {
    svg.append(el("line", { x1: PAD.left, x2: width - PAD.right, y1: y(threshold), y2: y(threshold), class: "threshold" }));
  }
  if (bestLayer !== null && bestLayer < n) {
    svg.append(el("line", { x1: x(bestLayer), x2: x(bestLayer), y1: PAD.top, y2: height - PAD.bottom, class: "best" }));
  }
  for (const s of series) {
    svg.append(el("path", { d: path(s.values, x, y), class: `series ${s.className || ""}` }));
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return;
      const dot = el("circle", { cx: x(i), cy: y(v), r: 2.4, class: `dot ${s.className || ""}` });
      dot.append(el("title", {}, `${s.label}, layer ${i}: ${v.toFixed(3)}`));
      svg.append(dot);
    });
  }
  return svg;
}

export function reliabilityChart(points, label, size = 150) {
  const svg = frame(size + 20, size, label);
  const w = size + 20;
  const x = (v) => PAD.left + v * (w - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v) * (size - PAD.top - PAD.bottom);
  yAxis(svg, y, PAD.left, w - PAD.right);
  svg.append(el("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), class: "diagonal" }));
  const sorted = [...points].sort((a, b) => a.predicted - b.predicted);
  const d = sorted.map((p, i) => `${i ? "L" : "M"}${x(p.predicted).toFixed(1)},${y(p.observed).toFixed(1)}`).join("");
  svg.append(el("path", { d, class: "series token" }));
  svg.append(el("text", { x: (PAD.left + w - PAD.right) / 2, y: size - 2, class: "axis", "text-anchor": "middle" }, "predicted → observed"));
  return svg;
}

// A vector's calibration sweep: how much each alpha's steered text costs under the unsteered model
// (log-probability drop, nats per token), the limit calibration allowed, and the coherent range.
// points: [{alpha, drop, coherent, sample}]
export function coherenceChart({ points, maxDrop = null, range = null, label, width = 300, height = 150 }) {
  const svg = frame(width, height, label);
  const alphas = points.map((p) => p.alpha);
  const lo = Math.min(...alphas, range ? range[0] : Infinity);
  const hi = Math.max(...alphas, range ? range[1] : -Infinity);
  const top = Math.max(...points.map((p) => p.drop), maxDrop ?? 0, 0.5) * 1.1;
  const bottom = Math.min(0, ...points.map((p) => p.drop));
  const x = (a) => PAD.left + ((a - lo) / (hi - lo || 1)) * (width - PAD.left - PAD.right);
  const y = (d) => PAD.top + (1 - (d - bottom) / (top - bottom || 1)) * (height - PAD.top - PAD.bottom);
  if (range) {
    svg.append(el("rect", { x: x(range[0]), y: PAD.top, width: Math.max(1, x(range[1]) - x(range[0])), height: height - PAD.top - PAD.bottom, class: "coherent" }));
  }
  for (const d of [0, top / 1.1 / 2, top / 1.1]) {
    svg.append(el("line", { x1: PAD.left, x2: width - PAD.right, y1: y(d), y2: y(d), class: "grid" }));
    svg.append(el("text", { x: PAD.left - 4, y: y(d) + 4, class: "axis", "text-anchor": "end" }, d.toFixed(1)));
  }
  if (maxDrop !== null) svg.append(el("line", { x1: PAD.left, x2: width - PAD.right, y1: y(maxDrop), y2: y(maxDrop), class: "threshold" }));
  const sorted = [...points].sort((a, b) => a.alpha - b.alpha);
  svg.append(el("path", { d: sorted.map((p, i) => `${i ? "L" : "M"}${x(p.alpha).toFixed(1)},${y(p.drop).toFixed(1)}`).join(""), class: "series token" }));
  for (const p of sorted) {
    const dot = el("circle", { cx: x(p.alpha), cy: y(p.drop), r: 3, class: `dot ${p.coherent ? "token" : "incoherent"}` });
    dot.append(el("title", {}, `alpha ${p.alpha}: ${p.drop.toFixed(2)} nats/token worse${p.coherent ? "" : " (incoherent)"}${p.sample ? ` — ${JSON.stringify(p.sample)}` : ""}`));
    svg.append(dot);
  }
  for (const a of [lo, 0, hi]) {
    if (a < lo || a > hi) continue;
    svg.append(el("text", { x: x(a), y: height - PAD.bottom + 14, class: "axis", "text-anchor": "middle" }, `${Number(a.toPrecision(3))}`));
  }
  svg.append(el("text", { x: (PAD.left + width - PAD.right) / 2, y: height - 2, class: "axis", "text-anchor": "middle" }, "alpha → log-prob drop"));
  return svg;
}

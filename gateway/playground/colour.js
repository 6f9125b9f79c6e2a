// The score colour scale: cividis (sampled from matplotlib at 11 points), made for readers with
// red-green colour blindness and monotone in lightness, so dark = low and light = high also
// reads in greyscale. Scores at or above the threshold are also underlined: not colour alone.

const CIVIDIS = [
  "#00224e", "#083370", "#35456c", "#4f576c", "#666970", "#7d7c78",
  "#948e77", "#aea371", "#c8b866", "#e5cf52", "#fee838",
];

const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

export function scoreColour(score) {
  const x = Math.min(1, Math.max(0, score)) * (CIVIDIS.length - 1);
  const i = Math.min(CIVIDIS.length - 2, Math.floor(x));
  const t = x - i;
  const [a, b] = [rgb(CIVIDIS[i]), rgb(CIVIDIS[i + 1])];
  const c = a.map((v, k) => Math.round(v + (b[k] - v) * t));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

// WCAG relative luminance of an [r, g, b] colour (0-255 channels).
function luminance(c) {
  const lin = c.map((v) => {
    const x = v / 255;
    return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
}

// Black or white text, whichever contrasts more with the cell: at least 4.5:1 anywhere on the scale.
export function textColour(score) {
  const m = scoreColour(score).match(/\d+/g).map(Number);
  const l = luminance(m);
  return (l + 0.05) / 0.05 >= 1.05 / (l + 0.05) ? "#000" : "#fff";
}

export function buildLegend(container, { probe = null, threshold = null } = {}) {
  container.replaceChildren();
  const title = document.createElement("span");
  title.className = "legend-title";
  title.textContent = probe ? `${probe} score` : "No probe chosen: tokens are not coloured";
  container.append(title);
  if (!probe) return;
  const bar = document.createElement("div");
  bar.className = "legend-bar";
  bar.style.background = `linear-gradient(to right, ${CIVIDIS.join(", ")})`;
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", `Colour scale from 0 (dark blue) to 1 (yellow)${threshold !== null ? `; threshold ${threshold.toFixed(2)}` : ""}`);
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    const tick = document.createElement("span");
    tick.className = "legend-tick";
    tick.style.left = `${v * 100}%`;
    tick.textContent = v.toString();
    bar.append(tick);
  }
  if (threshold !== null) {
    const mark = document.createElement("span");
    mark.className = "legend-threshold";
    mark.style.left = `${Math.min(1, Math.max(0, threshold)) * 100}%`;
    mark.title = `threshold ${threshold.toFixed(3)}`;
    bar.append(mark);
  }
  container.append(bar);
  const note = document.createElement("span");
  note.className = "legend-note";
  note.textContent = threshold !== null ? `underlined: at or above the threshold (${threshold.toFixed(2)}); ⚑ guard fired` : "⚑ guard fired";
  container.append(note);
}

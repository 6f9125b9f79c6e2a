// The Libraries view: every loaded vector and probe with its metadata; upload and delete (admin key).

import { ApiError, del, postJSON } from "./api.js";
import { coherenceChart, reliabilityChart } from "./charts.js";
import { layerList, probeAuroc, probeCalibrationCurve, vectorCalibration, vectorSweep } from "./metadata.js";

const f3 = (x) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(3) : "—");
const short = (sha) => (typeof sha === "string" ? sha.slice(0, 12) : "—");

function node(tag, { cls, text } = {}, children = []) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  n.append(...children);
  return n;
}

function facts(rows) {
  const dl = node("dl", { cls: "facts" });
  for (const [term, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(node("dt", { text: term }));
    const dd = node("dd");
    if (value instanceof Node) dd.append(value);
    else dd.textContent = String(value);
    dl.append(dd);
  }
  return dl;
}

function card(item, kind, rows, extra, onDeleted, report) {
  const article = node("article", { cls: "card" });
  article.dataset.name = item.name;
  const head = node("div", { cls: "card-head" }, [node("h3", { text: item.name })]);
  const remove = node("button", { text: "Delete", cls: "danger" });
  remove.type = "button";
  remove.setAttribute("aria-label", `Delete ${kind} ${item.name}`);
  if (!item.writable) {
    remove.disabled = true;
    remove.title = "Lives in a read-only library; only uploaded ones can be deleted";
  }
  // Two presses, no modal dialog: the first arms the button, the second deletes.
  remove.addEventListener("blur", () => {
    delete remove.dataset.armed;
    remove.textContent = "Delete";
  });
  remove.addEventListener("click", async () => {
    if (!remove.dataset.armed) {
      remove.dataset.armed = "1";
      remove.textContent = `Confirm: delete ${item.name}`;
      return;
    }
    try {
      await del(`${kind === "probe" ? "/v1/probes" : "/v1/steering/vectors"}/${encodeURIComponent(item.name)}`, { admin: true });
      report(`Deleted ${kind} ${item.name}.`);
      onDeleted();
    } catch (err) {
      report(err instanceof ApiError ? err.describe() : String(err), true);
    }
  });
  head.append(remove);
  article.append(head);
  if (item.description) article.append(node("p", { text: item.description }));
  article.append(facts(rows));
  if (extra) article.append(extra);
  return article;
}

export function renderVectors(container, items, onChanged, report) {
  container.replaceChildren();
  if (!items.length) container.append(node("p", { cls: "muted", text: "No steering vectors loaded." }));
  for (const v of items) {
    const cal = vectorCalibration(v);
    const rows = [
      ["method", v.method],
      ["recommended layers", layerList(v.recommended_layers)],
      ["recommended alpha", f3(cal.recommended)],
      ["calibrated", cal.calibrated ? "yes" : "no"],
      ["coherent alpha range", cal.range ? `${f3(cal.range[0])} … ${f3(cal.range[1])}` : "not measured"],
      ["alpha unit", cal.unit],
      ["midpoints (reflect)", v.has_midpoints === undefined ? null : v.has_midpoints ? "yes" : "no"],
      ["model", v.model_id],
      ["layers × hidden", v.num_layers && v.hidden_size ? `${v.num_layers} × ${v.hidden_size}` : null],
      ["created", v.created],
      ["sha256", short(v.sha256)],
      ["library", `${v.library || "—"}${v.writable ? " (uploads)" : " (read-only)"}`],
    ];
    const sweep = vectorSweep(v);
    const extra = sweep
      ? node("figure", { cls: "calibration" }, [
          coherenceChart({ points: sweep.points, maxDrop: sweep.maxDrop, range: cal.range, label: `Calibration of ${v.name}: log-probability drop of the steered text at each alpha` }),
          node("figcaption", { text: "calibration sweep: shaded = coherent range, dashed = the drop allowed, red = incoherent" }),
        ])
      : null;
    container.append(card(v, "steering vector", rows, extra, onChanged, report));
  }
}

export function renderProbes(container, items, onChanged, report) {
  container.replaceChildren();
  if (!items.length) container.append(node("p", { cls: "muted", text: "No probes loaded." }));
  for (const p of items) {
    const auroc = probeAuroc(p);
    const aurocText = auroc.value === null ? "—" : `${f3(auroc.value)}${auroc.interval ? ` [${f3(auroc.interval[0])}, ${f3(auroc.interval[1])}]` : ""}`;
    const curve = probeCalibrationCurve(p);
    const rows = [
      ["labels", Array.isArray(p.labels) ? p.labels.join(" / ") : p.labels],
      ["method", p.method],
      ["reads at", p.position],
      ["layers", layerList(p.layers)],
      ["best layer", p.best_layer],
      ["aggregate", p.aggregation],
      ["CV AUROC (best layer)", aurocText],
      ["CV accuracy", f3(p.accuracy)],
      ["threshold", p.threshold_fpr !== undefined && p.threshold_fpr !== null ? `${f3(p.threshold)} at FPR ${f3(p.threshold_fpr)}` : f3(p.threshold)],
      ["per-token threshold", typeof p.token_threshold === "number" ? f3(p.token_threshold) : null],
      ["examples", p.n_examples],
      ["model", p.model_id],
      ["created", p.created],
      ["sha256", short(p.sha256)],
      ["library", `${p.library || "—"}${p.writable ? " (uploads)" : " (read-only)"}`],
    ];
    let extra = null;
    if (curve) {
      extra = node("figure", { cls: "calibration" }, [
        reliabilityChart(curve, `Calibration of ${p.name}: observed rate against predicted score`),
        node("figcaption", { text: "calibration (diagonal: perfect)" }),
      ]);
    } else {
      extra = node("p", { cls: "muted", text: "No calibration curve in this probe's metadata." });
    }
    container.append(card(p, "probe", rows, extra, onChanged, report));
  }
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export async function upload({ kind, name, jsonFile, tensorFile }) {
  if (!jsonFile || !tensorFile) throw new ApiError(0, "Choose both files: NAME.json and NAME.safetensors.");
  let metadata;
  try {
    metadata = JSON.parse(await jsonFile.text());
  } catch (err) {
    throw new ApiError(0, `${jsonFile.name} is not valid JSON: ${err.message}`);
  }
  const body = { name: name || metadata.name, metadata, safetensors: base64(await tensorFile.arrayBuffer()) };
  const path = kind === "probe" ? "/v1/probes" : "/v1/steering/vectors";
  return postJSON(path, body, { admin: true });
}

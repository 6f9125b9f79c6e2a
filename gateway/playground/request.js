// Page settings -> one /v1/chat/completions body (api.md sections 3, 4, 4b), plus a label per choice.
// Side by side is one request with n: 2 and alpha [0, a]; a sweep is n alphas in one request.

export class SettingsError extends Error {}

export const OPS = ["add", "reflect", "ablate", "clamp"];
export const SCOPES = ["all", "prompt", "generation"];

// "" -> the vector's recommended layers (omitted); "8-16" / "all" pass through; "1, 4, 7" -> [1, 4, 7].
export function parseLayers(text) {
  const t = text.trim();
  if (!t) return undefined;
  if (t === "all" || /^\d+\s*-\s*\d+$/.test(t)) return t.replace(/\s+/g, "");
  const parts = t.split(/[\s,]+/).filter(Boolean);
  if (parts.every((p) => /^\d+$/.test(p))) return parts.map(Number);
  throw new SettingsError(`layers "${t}": use a range like 8-16, "all", or a list like 3, 5, 7`);
}

export function parseAlphas(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const alphas = parts.map(Number);
  if (!parts.length || alphas.some((a) => !Number.isFinite(a))) {
    throw new SettingsError(`sweep alphas "${text}": give numbers separated by commas, e.g. 0, 0.5, 1`);
  }
  return alphas;
}

function entry(v, alpha) {
  const e = { vector: v.name, alpha, op: v.op };
  const layers = parseLayers(v.layers || "");
  if (layers !== undefined) e.layers = layers;
  if (v.scope && v.scope !== "all") e.scope = v.scope;
  if (v.op === "clamp") e.value = v.value;
  return e;
}

const fmt = (a) => (Number.isInteger(a) ? a.toString() : a.toPrecision(3).replace(/\.?0+$/, ""));

export function buildRequest(s) {
  const body = { model: s.model, messages: s.messages, max_tokens: s.maxTokens, temperature: s.temperature };
  if (s.seed !== null && s.seed !== undefined) body.seed = s.seed;
  const active = s.vectors.filter((v) => v.enabled);
  let labels;
  let steer = [];
  if (s.mode === "compare") {
    if (!active.length) throw new SettingsError("Side by side needs at least one vector switched on.");
    body.n = 2;
    steer = active.map((v) => entry(v, [0, v.alpha]));
    labels = ["unsteered", active.map((v) => `${v.name} ${v.op} α=${fmt(v.alpha)}`).join(", ")];
  } else if (s.mode === "sweep") {
    const swept = s.vectors.find((v) => v.name === s.sweepVector);
    if (!swept) throw new SettingsError("Choose the vector to sweep.");
    const alphas = s.sweepAlphas;
    if (alphas.length < 2) throw new SettingsError("A sweep needs at least two alphas.");
    body.n = alphas.length;
    steer = [entry({ ...swept, enabled: true }, alphas)];
    // Other switched-on vectors keep one strength in every column.
    steer.push(...active.filter((v) => v.name !== swept.name).map((v) => entry(v, v.alpha)));
    labels = alphas.map((a) => `${swept.name} ${swept.op} α=${fmt(a)}`);
  } else {
    steer = active.map((v) => entry(v, v.alpha));
    labels = [steer.length ? active.map((v) => `${v.name} ${v.op} α=${fmt(v.alpha)}`).join(", ") : "unsteered"];
  }
  if (steer.length) body.steer = steer;
  const names = [...new Set([...(s.probes || []), ...(s.heatProbe ? [s.heatProbe] : [])])];
  if (names.length) {
    body.probes = Object.fromEntries(names.map((n) => [n, n === s.heatProbe ? { per_token: true } : {}]));
  }
  if (s.guard !== null && s.guard !== undefined) body.guard = s.guard;
  return { body, labels };
}

// The guard textarea: empty, or a JSON list of rules (the server validates the rules themselves).
export function parseGuard(text) {
  if (!text.trim()) return null;
  let rules;
  try {
    rules = JSON.parse(text);
  } catch (err) {
    throw new SettingsError(`guard rules are not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(rules)) throw new SettingsError("guard rules must be a JSON list of rules: [{...}, ...]");
  return rules;
}

export function streamed(body) {
  return { ...body, stream: true, stream_options: { include_usage: true } };
}

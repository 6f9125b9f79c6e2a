// Reading artifact metadata defensively: fields that newer servers add (calibration of vectors,
// intervals and calibration curves of probes) may be missing, named a little differently, or
// nested under "calibration" / "extra". Every reader returns null when it finds nothing usable.

const isNum = (x) => typeof x === "number" && Number.isFinite(x);

function pair(v) {
  if (Array.isArray(v) && v.length === 2 && isNum(v[0]) && isNum(v[1])) return [Math.min(v[0], v[1]), Math.max(v[0], v[1])];
  if (v && typeof v === "object") {
    for (const [a, b] of [["min", "max"], ["lo", "hi"], ["low", "high"], ["lower", "upper"]]) {
      if (isNum(v[a]) && isNum(v[b])) return [Math.min(v[a], v[b]), Math.max(v[a], v[b])];
    }
  }
  return null;
}

// The places a field may live, most specific first.
function sources(meta) {
  return [meta, meta.calibration, meta.extra, meta.extra && meta.extra.calibration].filter((s) => s && typeof s === "object");
}

function first(meta, names, read) {
  for (const src of sources(meta)) {
    for (const name of names) {
      if (src[name] !== undefined && src[name] !== null) {
        const got = read(src[name]);
        if (got !== null) return got;
      }
    }
  }
  return null;
}

const num = (v) => (isNum(v) ? v : null);

export function vectorCalibration(meta) {
  const calibrated = first(meta, ["calibrated"], (v) => (typeof v === "boolean" ? v : null));
  const range = first(meta, ["coherent_range", "coherent_alpha_range", "alpha_range", "coherent"], pair);
  const recommended = first(meta, ["recommended_alpha", "alpha_recommended"], num);
  return {
    calibrated: calibrated === null ? range !== null : calibrated,
    range,
    recommended: recommended ?? num(meta.default_alpha),
    unit: first(meta, ["alpha_unit"], (v) => (typeof v === "string" ? v : null)),
  };
}

// A slider wide enough for the coherent range and beyond it (where steering breaks), symmetric.
export function sliderSpan(meta) {
  const cal = vectorCalibration(meta);
  const sizes = [Math.abs(cal.recommended ?? 0)];
  if (cal.range) sizes.push(Math.abs(cal.range[0]), Math.abs(cal.range[1]));
  const biggest = Math.max(...sizes);
  if (!(biggest > 0)) return 2;
  const raw = biggest * 2;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  return Math.ceil(raw / magnitude) * magnitude; // a round number: 0.5, 2, 3, 40 ...
}

export function probeAuroc(meta) {
  const value = first(meta, ["auroc", "cv_auroc", "auroc_mean"], num);
  let interval = first(meta, ["auroc_ci", "auroc_interval", "auroc_ci95", "cv_auroc_ci"], pair);
  if (interval === null && value !== null) {
    const std = first(meta, ["auroc_std"], num);
    if (std !== null) interval = [Math.max(0, value - std), Math.min(1, value + std)];
  }
  return { value, interval };
}

// Reliability diagram points [{predicted, observed}], from any of the shapes a trainer may write.
export function probeCalibrationCurve(meta) {
  return first(meta, ["calibration_curve", "reliability", "calibration"], (v) => {
    let points = null;
    if (Array.isArray(v)) {
      points = v.map((p) =>
        Array.isArray(p) ? { predicted: p[0], observed: p[1] } : { predicted: p.predicted ?? p.mean_predicted ?? p.confidence, observed: p.observed ?? p.fraction_positive ?? p.accuracy },
      );
    } else if (v && typeof v === "object") {
      const pred = v.predicted ?? v.mean_predicted ?? v.prob_pred;
      const obs = v.observed ?? v.fraction_positive ?? v.prob_true;
      if (Array.isArray(pred) && Array.isArray(obs) && pred.length === obs.length) {
        points = pred.map((p, i) => ({ predicted: p, observed: obs[i] }));
      }
    }
    if (!points || points.length < 2) return null;
    return points.every((p) => isNum(p.predicted) && isNum(p.observed)) ? points : null;
  });
}

// Probes that give a reading per token can colour tokens; others only give a response-level score.
export function readsPerToken(meta) {
  return meta.position === undefined || meta.position === null || meta.position === "token";
}

export function layerList(layers) {
  if (!Array.isArray(layers) || !layers.length) return "";
  const parts = [];
  let start = layers[0];
  let prev = layers[0];
  for (const l of layers.slice(1).concat([null])) {
    if (l !== prev + 1) {
      parts.push(start === prev ? `${start}` : `${start}-${prev}`);
      start = l;
    }
    prev = l;
  }
  return parts.join(", ");
}

// A vector's calibration sweep (steering/calibration.py): [{alpha, drop, coherent, sample}] and the
// drop it allowed; null when the metadata has no sweep.
export function vectorSweep(meta) {
  const cal = meta.calibration;
  if (!cal || !Array.isArray(cal.sweep) || cal.sweep.length < 2) return null;
  const points = cal.sweep
    .filter((p) => p && isNum(p.alpha) && isNum(p.logprob_drop))
    .map((p) => ({ alpha: p.alpha, drop: p.logprob_drop, coherent: p.coherent !== false, sample: typeof p.sample === "string" ? p.sample : "" }));
  if (points.length < 2) return null;
  return { points, maxDrop: isNum(cal.max_logprob_drop) ? cal.max_logprob_drop : null };
}

// The threshold one token's score is judged by: a token probe's own per-token threshold where it
// has one, else the probe's (response) threshold.
export function tokenThreshold(meta) {
  if (!meta) return null;
  if (typeof meta.token_threshold === "number") return meta.token_threshold;
  return typeof meta.threshold === "number" ? meta.threshold : null;
}

// The answer columns: streamed tokens coloured by the chosen probe, each column's finish, probe
// aggregates and guard events, and the per-layer curve of a clicked token.

import { layerChart } from "./charts.js";
import { scoreColour, textColour } from "./colour.js";
import { layerList, tokenThreshold } from "./metadata.js";

function fmt(x) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(3) : "—";
}

export class AnswerBoard {
  // el: {answers, applied, detail} elements; probeMeta(name) -> the probe's metadata or null.
  constructor(el, probeMeta) {
    this.el = el;
    this.probeMeta = probeMeta;
    this.columns = [];
    this.heatProbe = null;
    this.steering = null;
  }

  // New empty columns, one per choice; tokens get coloured by heatProbe (a probe name or null).
  start(labels, heatProbe) {
    this.heatProbe = heatProbe;
    this.el.applied.hidden = true;
    this.columns = labels.map((label) => ({ label, tokens: [], final: null, guard: [], finish: null }));
    this.steering = null;
    const box = this.el.answers;
    box.replaceChildren();
    box.classList.toggle("multi", labels.length > 1);
    this.columns.forEach((a, i) => {
      const col = document.createElement("article");
      col.className = "answer";
      col.dataset.index = String(i);
      const h = document.createElement("h3");
      h.textContent = a.label;
      const toks = document.createElement("div");
      toks.className = "tokens";
      toks.setAttribute("aria-label", `answer ${i + 1}: ${a.label}`);
      toks.addEventListener("keydown", (e) => this.tokenKeys(e));
      const foot = document.createElement("div");
      foot.className = "answer-foot";
      col.append(h, toks, foot);
      box.append(col);
      a.col = col;
    });
  }

  column(index) {
    return this.columns[index] || null;
  }

  addToken(index, text, scores) {
    const a = this.column(index);
    if (!a) return null;
    const heat = this.heatProbe && scores ? scores[this.heatProbe] : null;
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
      const meta = this.probeMeta(this.heatProbe);
      const limit = tokenThreshold(meta);
      if (limit !== null && tok.score >= limit) span.classList.add("over");
      span.setAttribute("aria-label", `${JSON.stringify(text)}: ${this.heatProbe} ${tok.score.toFixed(3)}`);
    } else {
      span.classList.add("plain");
    }
    span.addEventListener("click", () => this.showToken(index, Number(span.dataset.index)));
    tok.el = span;
    a.tokens.push(tok);
    a.col.querySelector(".tokens").append(span);
    return tok;
  }

  addTail(index, text) {
    const a = this.column(index);
    if (!a || !text) return;
    const span = document.createElement("span");
    span.className = "tail";
    span.textContent = text;
    a.col.querySelector(".tokens").append(span);
    a.tail = (a.tail || "") + text;
  }

  markGuard(index, events, tok) {
    const a = this.column(index);
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
    this.renderFoot(index);
  }

  renderFoot(index) {
    const a = this.column(index);
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

  showSteering(steering) {
    if (!steering || !Array.isArray(steering.applied)) return;
    this.steering = steering;
    const parts = steering.applied.map((e) => {
      const alpha = Array.isArray(e.alpha) ? `[${e.alpha.join(", ")}]` : e.alpha;
      const warn = Array.isArray(e.warnings) && e.warnings.length ? ` ⚠ ${e.warnings.join("; ")}` : "";
      return `${e.vector} ${e.op} α=${alpha} layers ${layerList(e.layers) || e.layers} scope ${e.scope}${warn}`;
    });
    const box = this.el.applied;
    box.textContent = `Applied: ${parts.length ? parts.join(" | ") : "no steering"}`;
    box.hidden = false;
  }

  showToken(index, t) {
    const a = this.column(index);
    const tok = a && a.tokens[t];
    if (!tok) return;
    for (const el of this.el.answers.querySelectorAll(".tok.selected")) el.classList.remove("selected");
    tok.el.classList.add("selected");
    const box = this.el.detail;
    box.replaceChildren();
    const name = this.heatProbe;
    const meta = name ? this.probeMeta(name) : null;
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

  tokenKeys(event) {
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

  handle(chunk) {
    if (chunk.steering) this.showSteering(chunk.steering);
    for (const c of chunk.choices || []) {
      const delta = c.delta || {};
      let tok = null;
      if (c.finish_reason) {
        this.addTail(c.index, delta.content || "");
        const a = this.column(c.index);
        if (a) {
          a.finish = c.finish_reason;
          a.final = { probes: c.probes || null };
        }
      } else if (delta.content || c.probes) {
        tok = this.addToken(c.index, delta.content || "", c.probes);
      }
      if (c.guard && Array.isArray(c.guard.fired)) this.markGuard(c.index, c.guard.fired, tok);
      if (c.finish_reason) this.renderFoot(c.index);
    }
    if (chunk.usage) {
      const u = chunk.usage;
      this.el.answers.dataset.usage = JSON.stringify(u);
    }
  }

  // Columns that did not finish say why (the reason itself is in the page's alert).
  fail() {
    for (const a of this.columns) {
      if (a.finish) continue;
      const note = document.createElement("p");
      note.className = "unfinished";
      note.textContent = a.tokens.length ? "The answer was cut short (see the message above)." : "No answer (see the message above).";
      a.col.querySelector(".answer-foot").append(note);
    }
  }

  // The last column's text: the conversation continues from it (the steered one when comparing).
  lastContent() {
    const last = this.columns[this.columns.length - 1];
    return last ? last.tokens.map((t) => t.text).join("") + (last.tail || "") : "";
  }

  clear() {
    this.columns = [];
    this.el.answers.replaceChildren();
    this.el.applied.hidden = true;
  }
}

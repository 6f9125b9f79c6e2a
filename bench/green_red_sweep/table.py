"""Markdown table of every setting in results.json + results_fine.json (merged into results.json's 'fine' key)."""
import json
from pathlib import Path
R = json.loads(Path(str(Path(__file__).resolve().parent / "results.json")).read_text())
F = json.loads(Path(str(Path(__file__).resolve().parent / "results_fine.json")).read_text()) if Path(str(Path(__file__).resolve().parent / "results_fine.json")).exists() else None
F2 = json.loads(Path(str(Path(__file__).resolve().parent / "results_fine2.json")).read_text())
rows = R["settings"] + (F["settings"] if F else []) + F2["settings"]
def f(x): return "—" if x is None else f"{x:.2f}"
lines = ["| op | alpha | layers | red→green | green→red | no colour (red) | controls → g/r | lp/token (all rows) | coherent (calib. rule) | lp/token red rows | lp non-colour tokens red |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for s in sorted(rows, key=lambda s: (s["op"], s["layers"], -abs(s["alpha"]))):
    g, r, c = s.get("green", {}), s.get("red", {}), s.get("control", {})
    ctl = f"{c['contamination_rate']:.2f} ({round(c['contamination_rate']*c['eligible'])}/{c['eligible']})" if c else "—"
    lines.append(f"| {s['op']} | {s['alpha']:+g} | {s['layers']} | {f(r.get('swap_rate'))} | {f(g.get('swap_rate'))} | {f(r.get('no_colour_rate'))} | {ctl} | "
                 f"{s['logprob_per_token']:.2f} | {'yes' if s['coherent'] else 'no'} | {f(r.get('logprob_per_token'))} | {f(r.get('lp_non_colour'))} |")
b = R["baseline"]
head = (f"Unsteered baseline (30 green + 30 red questions = first 15 items x 2 phrasings each, 16 controls): "
        f"green questions answer {b['green']['answers']}, red questions {b['red']['answers']}; lp/token {b['logprob_per_token']:.2f}.\n\n")
Path("/work/exp8/table.md").write_text(head + "\n".join(lines) + "\n")
if F:
    R["fine"] = F; R["fine2"] = F2
    R["projections"] = json.loads(Path(str(Path(__file__).resolve().parent / "projections.json")).read_text())
    R["from_log_only"] = ["reflect a=+2.5 12-17 (recommended): g->r=0.53 r->g=0.47 none(r)=0.27 lp=-1.85 coherent=True "
                          "(run killed for time before its range was saved; line from sweep_fine.log)"]
    Path(str(Path(__file__).resolve().parent / "results.json")).write_text(json.dumps(R, indent=1))
print(head + "\n".join(lines))

"""Markdown table of reflect_midpoint.json (+ reflect_midpoint_extra.json) for the README section.

    python bench/green_red_sweep/reflect_table.py
"""
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wilson(k, n, z=1.96):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def fmt(k, n):
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}]"


def rows():
    for name in ("reflect_midpoint.json", "reflect_midpoint_extra.json"):
        p = HERE / name
        if p.exists():
            yield from json.loads(p.read_text())["settings"]


def main():
    print("| setting | green→red (95% Wilson) | red→green (95% Wilson) | controls → g/r | no colour g / r | lp/token | coherent |")
    print("|---|---|---|---|---|---|---|")
    for s in rows():
        g, r, c = s.get("green"), s.get("red"), s.get("control", {})
        gr = fmt(g["swap_k"], g["n"]) if g else "—"
        rg = fmt(r["swap_k"], r["n"]) if r else "—"
        ctrl = f"{c.get('turned_k', 0)}/{c.get('eligible', 0)}" if c else "—"
        nc = (f"{g['no_colour_rate']:.2f}" if g else "—") + " / " + (f"{r['no_colour_rate']:.2f}" if r else "—")
        print(f"| {s['tag']} | {gr} | {rg} | {ctrl} | {nc} | {s['logprob_per_token']:.2f} | {'yes' if s['coherent'] else 'no'} |")


if __name__ == "__main__":
    main()

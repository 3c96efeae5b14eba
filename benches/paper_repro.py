"""Table and plot of `benches/paper_repro.sh`'s runs: per gate optimizer the
final test top-1, the gate factors that are exactly 0 and those below a
threshold, the MACs the zeros imply, and the fraction of zero factors over
the steps (SVG). Needs numpy and onnx (the .venv of fixtures/requirements).

    .venv/bin/python benches/paper_repro.py [--dir .data/paper] [--out docs/notebook/paper]
"""
import argparse
import glob
import json
import os
import re

import numpy as np
import onnx
from onnx import numpy_helper

COLORS = {"apg": "#3b6ea5", "ista": "#d08a2a", "l1sgd": "#c0504d"}


def gate_values(path):
    m = onnx.load(path)
    out = []
    for t in m.graph.initializer:
        if t.name.startswith("sss_gate/"):
            out.append(numpy_helper.to_array(t).ravel())
    return np.concatenate(out) if out else np.zeros(0)


def runs(d):
    rows = []
    for f in sorted(glob.glob(os.path.join(d, "*.jsonl"))):
        tag = os.path.basename(f)[:-6]
        curve = [json.loads(l) for l in open(f) if l.strip()]
        log = open(f[:-6] + ".log").read() if os.path.exists(f[:-6] + ".log") else ""
        m = re.search(r"test accuracy \(candle, eval mode\): ([0-9.]+)%", log)
        away = re.search(r"loss ran away ([0-9]+)×", log)
        lam = gate_values(f[:-6] + ".onnx") if os.path.exists(f[:-6] + ".onnx") else np.zeros(0)
        g = re.search(r"_g([0-9.e-]+)_", tag)
        rows.append({
            "tag": tag, "opt": tag.split("_")[0], "gamma": float(g.group(1)) if g else None, "curve": curve,
            "top1": float(m.group(1)) if m else None,
            "rewinds": int(away.group(1)) if away else 0,
            "zeros": int((lam == 0).sum()), "small": int((np.abs(lam) < 1e-2).sum()), "factors": int(lam.size),
        })
    order = {o: i for i, o in enumerate(COLORS)}
    rows.sort(key=lambda r: (order.get(r["opt"], 9), r["gamma"] or 0, r["tag"]))
    return rows


def tradeoff(rows, path, title):
    """Final test top-1 against the MACs the exact zeros leave, one line per
    solver through its values of γ (the paper's accuracy–sparsity view)."""
    w, h, l, b, t = 700, 360, 60, 40, 30
    pts = [(r["curve"][-1].get("macs_ratio", 1.0), r["top1"]) for r in rows if r["curve"] and r["top1"] is not None]
    if not pts:
        return
    lo = min(a for _, a in pts) - 1
    hi = max(a for _, a in pts) + 1
    x = lambda m: l + (w - l - 80) * m
    y = lambda a: h - b - (h - b - t) * (a - lo) / (hi - lo)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{l}" y="18">{title}</text>',
             f'<line x1="{l}" y1="{h - b}" x2="{w - 20}" y2="{h - b}" stroke="black"/>',
             f'<line x1="{l}" y1="{h - b}" x2="{l}" y2="{t}" stroke="black"/>',
             f'<text x="{w / 2 - 80}" y="{h - 8}">MACs left by the exact zeros</text>',
             f'<text x="4" y="{t + 10}">top-1 %</text>']
    for m in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{x(m) - 10:.1f}" y="{h - b + 15}">{m:.2f}</text>')
    for k in range(5):
        a = lo + (hi - lo) * k / 4
        parts.append(f'<text x="{l - 40}" y="{y(a) + 4:.1f}">{a:.1f}</text>')
    for k, opt in enumerate(COLORS):
        mine = [r for r in rows if r["opt"] == opt and r["curve"] and r["top1"] is not None]
        if not mine:
            continue
        col = COLORS[opt]
        xy = sorted((r["curve"][-1].get("macs_ratio", 1.0), r["top1"], r["gamma"]) for r in mine)
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.5" points="'
                     + " ".join(f"{x(m):.1f},{y(a):.1f}" for m, a, _ in xy) + '"/>')
        for m, a, g in xy:
            parts.append(f'<circle cx="{x(m):.1f}" cy="{y(a):.1f}" r="4" fill="{col}"/>')
            parts.append(f'<text x="{x(m) + 6:.1f}" y="{y(a) - 5:.1f}" font-size="9" fill="{col}">γ {g:g}</text>')
        parts.append(f'<text x="{w - 200}" y="{h - b - 20 - 16 * (len(COLORS) - k)}" fill="{col}">{opt}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def plot(rows, path, title):
    w, h, l, b, t = 640, 360, 60, 40, 30
    steps = max((r["curve"][-1]["step"] for r in rows if r["curve"]), default=1)
    x = lambda s: l + (w - l - 20) * s / steps
    y = lambda f: h - b - (h - b - t) * f
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{l}" y="18">{title}</text>',
             f'<line x1="{l}" y1="{y(0)}" x2="{w - 20}" y2="{y(0)}" stroke="black"/>',
             f'<line x1="{l}" y1="{y(0)}" x2="{l}" y2="{y(1)}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 8}">step</text>',
             f'<text x="4" y="{y(0.5)}">zero</text><text x="4" y="{y(0.5) + 14}">factors</text>']
    for f in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{l - 30}" y="{y(f) + 4}">{f:.2f}</text>')
    gammas = sorted({r["gamma"] for r in rows if r["gamma"] is not None})
    dashes = ["", "6,3", "2,2", "8,2,2,2", "1,4", "10,4"]
    for k, r in enumerate(rows):
        dash = dashes[gammas.index(r["gamma"]) % len(dashes)] if r["gamma"] in gammas else ""
        pts = " ".join(f"{x(c['step']):.1f},{y(c['zero_gates'] / max(c['gates'], 1)):.1f}" for c in r["curve"])
        col = COLORS.get(r["opt"], "gray")
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" stroke-dasharray="{dash}" points="{pts}"/>')
        seed = r["tag"].rsplit("_", 1)[-1]
        parts.append(f'<text x="{w - 140}" y="{t + 12 * (k + 1)}" font-size="10" fill="{col}">{r["opt"]} γ {r["gamma"]:g} {seed}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=".data/paper")
    ap.add_argument("--out", default="docs/notebook/paper")
    a = ap.parse_args()
    rows = runs(a.dir)
    os.makedirs(a.out, exist_ok=True)
    lines = ["| run | test top-1 | factors exactly 0 | below 0.01 | MACs the zeros imply | first exact zero at step | loss ran away (rewound, lr halved) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        last = r["curve"][-1] if r["curve"] else {}
        first = next((c["step"] for c in r["curve"] if c["zero_gates"] > 0), None)
        lines.append(f"| {r['tag']} | {r['top1']} % | {r['zeros']} / {r['factors']} | {r['small']} | "
                     f"{last.get('macs_ratio', 1.0):.3f}× | {first if first is not None else 'never'} | {r['rewinds'] or ''} |")
    md = "\n".join(lines)
    open(os.path.join(a.out, "from_scratch.md"), "w").write(md + "\n")
    plot(rows, os.path.join(a.out, "from_scratch.svg"), "ResNet-20 from scratch: zero gate factors over the steps")
    tradeoff(rows, os.path.join(a.out, "tradeoff.svg"), "ResNet-20 from scratch: top-1 against the MACs the zeros leave")
    print(md)


if __name__ == "__main__":
    main()

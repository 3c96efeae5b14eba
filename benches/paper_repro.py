"""Table and plot of `benches/paper_repro.sh`'s runs: per gate optimizer the
final test top-1, the gate factors that are exactly 0 and those below a
threshold, the MACs the zeros imply, and the fraction of zero factors over
the steps (SVG). Needs numpy and onnx (the .venv of fixtures/requirements).

    .venv/bin/python benches/paper_repro.py [--dir .data/paper] [--out docs/paper]
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
        lam = gate_values(f[:-6] + ".onnx") if os.path.exists(f[:-6] + ".onnx") else np.zeros(0)
        rows.append({
            "tag": tag, "opt": tag.split("_")[0], "curve": curve,
            "top1": float(m.group(1)) if m else None,
            "zeros": int((lam == 0).sum()), "small": int((np.abs(lam) < 1e-2).sum()), "factors": int(lam.size),
        })
    return rows


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
    for k, r in enumerate(rows):
        pts = " ".join(f"{x(c['step']):.1f},{y(c['zero_gates'] / max(c['gates'], 1)):.1f}" for c in r["curve"])
        col = COLORS.get(r["opt"], "gray")
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w - 140}" y="{t + 16 * (k + 1)}" fill="{col}">{r["opt"]}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=".data/paper")
    ap.add_argument("--out", default="docs/paper")
    a = ap.parse_args()
    rows = runs(a.dir)
    os.makedirs(a.out, exist_ok=True)
    lines = ["| run | test top-1 | factors exactly 0 | below 0.01 | MACs the zeros imply | first exact zero at step |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        last = r["curve"][-1] if r["curve"] else {}
        first = next((c["step"] for c in r["curve"] if c["zero_gates"] > 0), None)
        lines.append(f"| {r['tag']} | {r['top1']} % | {r['zeros']} / {r['factors']} | {r['small']} | "
                     f"{last.get('macs_ratio', 1.0):.3f}× | {first if first is not None else 'never'} |")
    md = "\n".join(lines)
    open(os.path.join(a.out, "from_scratch.md"), "w").write(md + "\n")
    plot(rows, os.path.join(a.out, "from_scratch.svg"), "ResNet-20 from scratch: zero gate factors over the steps")
    print(md)


if __name__ == "__main__":
    main()

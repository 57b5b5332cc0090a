#!/usr/bin/env python3
"""Training curves from `unlearnrec train` logs: validation Recall@20 against wall time, one line per log.

    python3 scripts/train_curves.py OUT.svg "LABEL=path/to/train.log" ...

Each log is what `unlearnrec train` prints on standard error (progress lines included). The x axis is the
run's wall time at each validated epoch: the `elapsed` of the last progress line before the epoch's line
(progress lines come several times a second, so this is the time to the second). Writes a standalone SVG
(no plotting library needed) and prints each curve's points as a table.
"""

import re
import sys

EPOCH = re.compile(r"epoch\s+(\d+): loss [\d.eE+-]+ \(([\d.]+)s\)(?: valid recall@20 ([\d.]+))?")
ELAPSED = re.compile(r"epoch (\d+)/\d+ .*elapsed (?:(\d+)h)?(?:(\d+)m)?(\d+)s")


def parse(path):
    """[(epoch, wall seconds at its end, validation recall@20)] for the validated epochs."""
    text = open(path, encoding="utf-8", errors="replace").read().replace("\r", "\n")
    points, elapsed = [], 0
    for line in text.splitlines():
        m = ELAPSED.search(line)
        if m:
            h, mi, s = (int(g) if g else 0 for g in m.group(2, 3, 4))
            elapsed = max(elapsed, 3600 * h + 60 * mi + s)
        m = EPOCH.search(line)
        if m and m.group(3) is not None:
            points.append((int(m.group(1)), float(elapsed), float(m.group(3))))
    return points


def svg(curves, out):
    w, h, ml, mb, mt, mr = 640, 400, 60, 45, 20, 150
    xs = [p[1] / 60 for _, pts in curves for p in pts] or [1]
    ys = [p[2] for _, pts in curves for p in pts] or [0, 1]
    x1 = max(xs) * 1.05
    y0, y1 = min(ys) * 0.95, max(ys) * 1.02
    sx = lambda x: ml + (w - ml - mr) * x / x1
    sy = lambda y: h - mb - (h - mb - mt) * (y - y0) / (y1 - y0)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{ml}" y1="{h - mb}" x2="{w - mr}" y2="{h - mb}" stroke="black"/>',
             f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{h - mb}" stroke="black"/>',
             f'<text x="{(ml + w - mr) / 2}" y="{h - 8}" text-anchor="middle">wall time (minutes)</text>',
             f'<text x="14" y="{(mt + h - mb) / 2}" text-anchor="middle" transform="rotate(-90 14 {(mt + h - mb) / 2})">validation Recall@20</text>']
    for k in range(6):
        x = x1 * k / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{h - mb + 16}" text-anchor="middle">{x:.0f}</text>')
        y = y0 + (y1 - y0) * k / 5
        parts.append(f'<text x="{ml - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3f}</text>')
        parts.append(f'<line x1="{ml}" y1="{sy(y):.1f}" x2="{w - mr}" y2="{sy(y):.1f}" stroke="#ddd"/>')
    for i, (label, pts) in enumerate(curves):
        c = colours[i % len(colours)]
        path = " ".join(f"{sx(t / 60):.1f},{sy(r):.1f}" for _, t, r in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{w - mr + 8}" y="{mt + 16 * (i + 1)}" fill="{c}">{label}</text>')
    parts.append("</svg>")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    curves = []
    for arg in sys.argv[2:]:
        label, _, path = arg.rpartition("=")
        pts = parse(path)
        if not pts:
            sys.exit(f"{path}: no validated epoch found")
        curves.append((label, pts))
        print(f"## {label}\n| epoch | wall (min) | valid Recall@20 |\n|---:|---:|---:|")
        for e, t, r in pts:
            print(f"| {e} | {t / 60:.1f} | {r:.4f} |")
    svg(curves, sys.argv[1])


if __name__ == "__main__":
    main()

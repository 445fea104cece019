#!/usr/bin/env python3
"""Draws perf results as one SVG: relay throughput per setting (median of
runs, raw runs as dots) and final-dot latency against offered load.
Standard library only.

    perf/plot.py RELAY_CSV LATENCY_CSV OUT_SVG
"""
import csv
import statistics
import sys
from collections import defaultdict

W, H = 900, 380
PANEL = 400


def relay_panel(rows):
    runs = defaultdict(list)
    for r in rows:
        runs[r["setting"]].append(float(r["msgs_per_sec"]))
    names = list(runs)
    top = max(max(v) for v in runs.values()) * 1.15
    x0, y0, w, h = 60, 40, PANEL - 80, 280
    bw = w / len(names)
    out = [f'<text x="{x0 - 40}" y="24" font-size="13">Relay msgs/s: smtp-source → relay → smtp-sink, 4 KiB</text>']
    out.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#333"/>')
    for t in range(0, int(top), 2000):
        y = y0 + h - h * t / top
        out.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{t}</text>')
    colors = {"ceiling": "#999", "postfix": "#c44"}
    for i, name in enumerate(names):
        med = statistics.median(runs[name])
        bh = h * med / top
        x = x0 + i * bw + bw * 0.15
        col = colors.get(name, "#2a7")
        out.append(f'<rect x="{x:.1f}" y="{y0 + h - bh:.1f}" width="{bw * 0.7:.1f}" height="{bh:.1f}" fill="{col}"/>')
        out.append(f'<text x="{x + bw * 0.35:.1f}" y="{y0 + h - bh - 6:.1f}" font-size="12" text-anchor="middle">{med:.0f}</text>')
        out.append(f'<text x="{x + bw * 0.35:.1f}" y="{y0 + h + 16:.1f}" font-size="11" text-anchor="middle">{name}</text>')
        for v in runs[name]:
            out.append(f'<circle cx="{x + bw * 0.35:.1f}" cy="{y0 + h - h * v / top:.1f}" r="2.5" fill="#000"/>')
    return out


def latency_panel(rows):
    pts = [(float(r["achieved_rate"]), float(r["p50_us"]) / 1000, float(r["p99_us"]) / 1000) for r in rows]
    pts.sort()
    xmax = max(p[0] for p in pts) * 1.1
    ymax = max(p[2] for p in pts) * 1.15
    x0, y0, w, h = PANEL + 90, 40, W - PANEL - 120, 280
    sx = lambda v: x0 + w * v / xmax
    sy = lambda v: y0 + h - h * v / ymax
    out = [f'<text x="{x0 - 40}" y="24" font-size="13">Final-dot reply latency (ms) vs achieved msgs/s</text>']
    out.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#333"/>')
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="#333"/>')
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<text x="{x0 - 6}" y="{sy(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.1f}</text>')
        r = xmax * i / 4
        out.append(f'<text x="{sx(r):.1f}" y="{y0 + h + 16}" font-size="11" text-anchor="middle">{r:.0f}</text>')
    for idx, (label, col) in ((1, ("p50", "#27a")), (2, ("p99", "#c72"))):
        path = " ".join(f"{sx(p[0]):.1f},{sy(p[idx]):.1f}" for p in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{col}" stroke-width="2"/>')
        for p in pts:
            out.append(f'<circle cx="{sx(p[0]):.1f}" cy="{sy(p[idx]):.1f}" r="3" fill="{col}"/>')
        out.append(f'<text x="{x0 + w - 40}" y="{y0 + 14 * idx}" font-size="12" fill="{col}">{label}</text>')
    if 2.0 < ymax:
        out.append(f'<line x1="{x0}" y1="{sy(2.0):.1f}" x2="{x0 + w}" y2="{sy(2.0):.1f}" stroke="#c44" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x0 + 4}" y="{sy(2.0) - 4:.1f}" font-size="11" fill="#c44">2 ms target</text>')
    return out


def main():
    relay_csv, latency_csv, out_svg = sys.argv[1:4]
    with open(relay_csv) as f:
        relay = list(csv.DictReader(f))
    with open(latency_csv) as f:
        latency = list(csv.DictReader(f))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
             f'<rect width="{W}" height="{H}" fill="#fff"/>']
    parts += relay_panel(relay) + latency_panel(latency)
    parts.append("</svg>")
    with open(out_svg, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()

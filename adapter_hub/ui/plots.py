"""Server-side SVG for the web page: accuracy-matrix heatmaps, seen-task accuracy curves with their
intervals, and lineage graphs. Hand-written SVG (no matplotlib): a page renders in milliseconds, the
pictures scale, and every element can be found by a test (rect.cell, path.band, g.node, g.edge).

Every string that reaches the SVG (task names, refs, labels, parameters) goes through `_esc`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

# Matplotlib's tab10: distinct on screen and in print, and the report's PNGs use the same colours.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
# Viridis at five stops: perceptually even and readable for colour-blind viewers.
_VIRIDIS = [(0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
            (1.0, (253, 231, 37))]
FONT = 'font-family="system-ui, sans-serif"'


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _colour(value: float) -> tuple[str, str]:
    """(fill, text colour) for an accuracy in [0, 1]."""
    v = min(max(value, 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(_VIRIDIS, _VIRIDIS[1:]):
        if v <= x1:
            t = (v - x0) / (x1 - x0)
            rgb = [round(a + (b - a) * t) for a, b in zip(c0, c1)]
            break
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return "#%02x%02x%02x" % tuple(rgb), "#000" if luminance > 140 else "#fff"


def _text_width(text: str, size: int = 12) -> int:
    return int(len(text) * size * 0.6) + 4


def heatmap(matrix: Sequence[Sequence[float | None]], tasks: Sequence[str], title: str) -> str:
    """R[i][j] = accuracy on task j after learning task i, one coloured cell each, value written in."""
    T = len(tasks)
    cell_w, cell_h = max(64, max(_text_width(t) for t in tasks)), 36
    left = max(_text_width(f"after {t}") for t in tasks) + 12
    top = 56
    width, height = left + T * cell_w + 12, top + T * cell_h + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}" {FONT}>',
           f'<text x="{left}" y="18" font-size="14" font-weight="bold">{_esc(title)}</text>',
           f'<text x="{left + T * cell_w / 2}" y="38" font-size="11" text-anchor="middle" fill="#555">'
           f'accuracy on task (columns) after learning task (rows)</text>']
    for j, task in enumerate(tasks):
        out.append(f'<text x="{left + j * cell_w + cell_w / 2}" y="{top - 4}" font-size="12" '
                   f'text-anchor="middle">{_esc(task)}</text>')
    for i, row in enumerate(matrix):
        y = top + i * cell_h
        out.append(f'<text x="{left - 6}" y="{y + cell_h / 2 + 4}" font-size="12" text-anchor="end">'
                   f'after {_esc(tasks[i])}</text>')
        for j, value in enumerate(row):
            x = left + j * cell_w
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            fill, ink = ("#eee", "#888") if missing else _colour(value)
            label = "—" if missing else f"{value:.3f}"
            out.append(f'<g><title>after {_esc(tasks[i])}, on {_esc(tasks[j])}: {label}</title>'
                       f'<rect class="cell" data-row="{i}" data-col="{j}" x="{x}" y="{y}" width="{cell_w - 2}" '
                       f'height="{cell_h - 2}" fill="{fill}"/>'
                       f'<text x="{x + cell_w / 2 - 1}" y="{y + cell_h / 2 + 4}" font-size="12" '
                       f'text-anchor="middle" fill="{ink}">{label}</text></g>')
    out.append(f'<text x="{left}" y="{height - 10}" font-size="11" fill="#555">0 dark → 1 yellow; diagonal: just learnt</text></svg>')
    return "".join(out)


def curves(series: Sequence[tuple[str, Sequence[dict[str, Any]]]], tasks: Sequence[str], title: str,
           subtitle: str = "") -> str:
    """One line per series: the mean accuracy on the tasks learnt so far after each step, with its 95%
    interval as a shaded band when the series has more than one cell. Points are {"mean","low","high"}."""
    T = len(tasks)
    legend_w = max([_text_width(label) for label, _ in series] + [60]) + 30
    left, top, plot_w, plot_h = 56, 50, max(120 * T, 360), 240
    width, height = left + plot_w + legend_w + 12, top + plot_h + 62
    x_of: Callable[[int], float] = (lambda i: left + plot_w / 2) if T == 1 else \
        (lambda i: left + 24 + i * (plot_w - 48) / (T - 1))

    def y_of(v: float) -> float:
        return top + plot_h - min(max(v, 0.0), 1.0) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="curves" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}" {FONT}>',
           f'<text x="{left}" y="18" font-size="14" font-weight="bold">{_esc(title)}</text>',
           f'<text x="{left}" y="36" font-size="11" fill="#555">{_esc(subtitle)}</text>']
    for k in range(6):
        v = k / 5
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y_of(v)}" y2="{y_of(v)}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y_of(v) + 4}" font-size="11" text-anchor="end">{v:.1f}</text>')
    for i, task in enumerate(tasks):
        out.append(f'<text x="{x_of(i)}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">'
                   f'{i + 1}: {_esc(task)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 38}" font-size="12" text-anchor="middle">'
               f'after learning task #</text>'
               f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" font-size="12" '
               f'text-anchor="middle">accuracy on tasks seen so far</text>')
    for k, (label, points) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        if any(p.get("seeds", 1) > 1 or p.get("low") != p.get("high") for p in points) and len(points) > 1:
            upper = [f"{x_of(i)},{y_of(p['high'])}" for i, p in enumerate(points)]
            lower = [f"{x_of(i)},{y_of(p['low'])}" for i, p in reversed(list(enumerate(points)))]
            out.append(f'<path class="band" d="M{" L".join(upper + lower)} Z" fill="{colour}" fill-opacity="0.15" '
                       f'stroke="none"><title>{_esc(label)}: 95% interval</title></path>')
        line = " L".join(f"{x_of(i)},{y_of(p['mean'])}" for i, p in enumerate(points))
        out.append(f'<path class="line" d="M{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, p in enumerate(points):
            interval = f" [{p['low']:.3f}, {p['high']:.3f}]" if "low" in p else ""
            out.append(f'<circle cx="{x_of(i)}" cy="{y_of(p["mean"])}" r="3.5" fill="{colour}"><title>'
                       f'{_esc(label)} after {_esc(tasks[i])}: {p["mean"]:.3f}{interval}</title></circle>')
        ly = top + 8 + k * 18
        out.append(f'<line x1="{left + plot_w + 14}" x2="{left + plot_w + 34}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="3"/><text x="{left + plot_w + 40}" y="{ly + 4}" font-size="12">{_esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def lineage(center: str, up: Sequence[dict[str, Any]], down: Sequence[dict[str, Any]],
            href: Callable[[str], str | None]) -> str:
    """The version in the middle, ancestors above (one row per generation), descendants below; edges
    point from parent to child and carry their kind. `href(ref)` links a node (None: not linkable,
    e.g. a parent outside the registry)."""
    # Longest-path layering: every parent sits at least one row above each of its children, so an edge
    # between two ancestors (topic:1 -> sentiment:1, both parents of a merge) never runs sideways.
    level: dict[str, int] = {center: 0}
    for _ in range(len(up) + len(down) + 1):  # relaxation on a DAG settles within |edges| passes
        changed = False
        for e in up:
            target = level.get(e["child"], 0) - 1
            if level.get(e["parent"], 1) > target:
                level[e["parent"]], changed = target, True
        for e in down:
            target = level.get(e["parent"], 0) + 1
            if level.get(e["child"], -1) < target:
                level[e["child"]], changed = target, True
        if not changed:
            break
    rows: dict[int, list[str]] = {}
    for ref, lv in sorted(level.items(), key=lambda item: (item[1], item[0])):
        rows.setdefault(lv, []).append(ref)
    node_w = max(_text_width(r) for r in level) + 16
    node_h, gap_x, gap_y = 28, 28, 64
    widest = max(len(r) for r in rows.values())
    width = max(widest * (node_w + gap_x) + gap_x, 240) + 2 * node_w  # room for edges that bow out
    levels = sorted(rows)
    height = len(levels) * (node_h + gap_y) - gap_y + 40
    pos: dict[str, tuple[float, float]] = {}
    for r, lv in enumerate(levels):
        row = rows[lv]
        span = len(row) * (node_w + gap_x) - gap_x
        for k, ref in enumerate(row):
            pos[ref] = ((width - span) / 2 + k * (node_w + gap_x), 20 + r * (node_h + gap_y))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage of {_esc(center)}" {FONT}>',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>']
    seen = set()
    long_edges = 0
    for e in list(up) + list(down):
        key = (e["parent"], e["child"], e["kind"])
        if key in seen or e["parent"] not in pos or e["child"] not in pos:
            continue
        seen.add(key)
        (px, py), (cx, cy) = pos[e["parent"]], pos[e["child"]]
        x1, y1, x2, y2 = px + node_w / 2, py + node_h, cx + node_w / 2, cy
        if level[e["child"]] - level[e["parent"]] > 1:  # skips a row: bow out so it clears the nodes between
            long_edges += 1
            bulge = (node_w * 0.75 + 10 * long_edges) * (1 if long_edges % 2 else -1)
            dy = y2 - y1
            shape = f'M{x1},{y1} C{x1 + bulge},{y1 + dy / 3} {x2 + bulge},{y2 - dy / 3} {x2},{y2}'
            lx, ly = (x1 + x2) / 2 + bulge * 0.75 + 4, (y1 + y2) / 2
        else:
            shape = f'M{x1},{y1} L{x2},{y2}'
            lx, ly = x1 + 0.3 * (x2 - x1) + 4, y1 + 0.3 * (y2 - y1) + 4
        params = json.dumps(e.get("params") or {}, sort_keys=True)
        out.append(f'<g class="edge" data-parent="{_esc(e["parent"])}" data-child="{_esc(e["child"])}" '
                   f'data-kind="{_esc(e["kind"])}"><title>{_esc(e["parent"])} → {_esc(e["child"])} '
                   f'({_esc(e["kind"])}) {_esc(params[:300])}</title>'
                   f'<path d="{shape}" fill="none" stroke="#666" stroke-width="1.5" marker-end="url(#arrow)"/>'
                   f'<text x="{lx}" y="{ly}" font-size="11" fill="#444">{_esc(e["kind"])}</text></g>')
    for ref, (x, y) in pos.items():
        link = href(ref) if ref != center else None
        fill = "#ffe9a8" if ref == center else "#e8f0fe"
        box = (f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="6" fill="{fill}" stroke="#456"/>'
               f'<text x="{x + node_w / 2}" y="{y + node_h / 2 + 4}" font-size="12" text-anchor="middle">'
               f'{_esc(ref)}</text>')
        if link:
            box = f'<a href="{_esc(link)}">{box}</a>'
        out.append(f'<g class="node" data-ref="{_esc(ref)}">{box}</g>')
    out.append("</svg>")
    return "".join(out)
